// The parity suite once more with every tsshim container of the namespace in one per-node shim
// (containerd and so its shims inherit TSSHIM_PER_NODE from this process).
process.env.TSSHIM_PER_NODE = '1';
// eslint-disable-next-line @typescript-eslint/no-require-imports -- after the env change above, which an import would precede
require('./parity.test');
