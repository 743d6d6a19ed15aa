import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface IssuedPair {
  readonly cert: string
  readonly key: string
}

const CA_CONFIG = `[ca]
default_ca = issuing
[issuing]
database = db/index
new_certs_dir = db
serial = db/serial
policy = any_name
default_md = sha256
copy_extensions = copy
[any_name]
commonName = supplied
`

function openssl(cwd: string, ...args: string[]): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] })
}

/** A certificate authority made with openssl for one test file: leaves for any names, valid now or long expired. */
export class TestCa {
  readonly dir: string
  readonly pem: string

  private constructor(dir: string) {
    this.dir = dir
    this.pem = readFileSync(join(dir, 'ca.crt'), 'utf8')
  }

  static create(): TestCa {
    const dir = mkdtempSync(join(tmpdir(), 'portico-ca-'))
    writeFileSync(join(dir, 'ca.cnf'), CA_CONFIG)
    mkdirSync(join(dir, 'db'))
    writeFileSync(join(dir, 'db/index'), '')
    // Renewals reuse a subject.
    writeFileSync(join(dir, 'db/index.attr'), 'unique_subject = no\n')
    writeFileSync(join(dir, 'db/serial'), '1000\n')
    openssl(dir, 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-subj', '/CN=Portico Test CA', '-days', '2')
    return new TestCa(dir)
  }

  /** A leaf for `names` (DNS SANs, the first also its CN); `expired` makes one valid only in January 2020. */
  issue(names: readonly string[], options: { expired?: boolean } = {}): IssuedPair {
    const id = `leaf-${Math.random().toString(36).slice(2)}`
    openssl(this.dir, 'req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${id}.key`, '-out', `${id}.csr`, '-subj', `/CN=${names[0] ?? 'none'}`, '-addext', `subjectAltName=${names.map((n) => `DNS:${n}`).join(',')}`)
    const validity = options.expired ? ['-startdate', '20200101000000Z', '-enddate', '20200201000000Z'] : ['-days', '2']
    openssl(this.dir, 'ca', '-batch', '-notext', '-config', 'ca.cnf', '-cert', 'ca.crt', '-keyfile', 'ca.key', '-in', `${id}.csr`, '-out', `${id}.crt`, ...validity)
    return { cert: readFileSync(join(this.dir, `${id}.crt`), 'utf8'), key: readFileSync(join(this.dir, `${id}.key`), 'utf8') }
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true })
  }
}

/** Writes NAME.crt and NAME.key into `dir` (the layout of --tls-dir). */
export function writePair(dir: string, name: string, pair: IssuedPair): void {
  writeFileSync(join(dir, `${name}.crt`), pair.cert)
  writeFileSync(join(dir, `${name}.key`), pair.key)
}
