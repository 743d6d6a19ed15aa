/** A Host header's value: an RFC 3986 host (reg-name or IP literal) and an optional port; group 1 is the host. */
export const VALID_HOST = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(:\d{1,5})?$/
