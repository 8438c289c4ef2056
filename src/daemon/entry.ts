// The script a shim process runs again for its daemon and its warm spares: boot.js (the bundle
// with its code cache) when this process runs from the bundle, main.js in a plain tsc build.
import * as path from 'node:path';

export const BUNDLE_NAME = 'bundle.js';

export const SHIM_ENTRY = path.join(__dirname, path.basename(__filename) === BUNDLE_NAME ? 'boot.js' : 'main.js');
