export { ConfigSchema, crossFieldRules, type RouterConfig, type ConfigInput } from './schema.js';
export { loadConfig, validateConfig, applyEnvironment, environmentOverrides, parseConfigText } from './load.js';
