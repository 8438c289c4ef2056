// containerd's identifier rule for namespaces and ids (its identifiers package): what may safely
// become part of a path or a socket name.
const IDENTIFIER = /^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$/;
const MAX_IDENTIFIER_LENGTH = 76;

export function isValidIdentifier(s: string): boolean {
  return s.length > 0 && s.length <= MAX_IDENTIFIER_LENGTH && IDENTIFIER.test(s);
}
