export { register, type HealthCheckOptions, type RegisterOptions, type Registration } from './register.js'
