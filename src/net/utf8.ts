// UTF-8 conversions for the plugin's hot path: identifiers, interface names, kinds and aliases, which are
// nearly always ASCII. Those are converted by hand, because Buffer's conversions are JavaScript that Node
// compiles on their first use in a process, and a CNI plugin process makes a handful of conversions and
// exits. Anything else goes through Buffer, so the bytes are the same either way (test/unit/netlink-codec).

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return false;
  return true;
}

/** `text` as UTF-8 bytes. */
export function utf8Bytes(text: string): Uint8Array {
  if (!isAscii(text)) return Buffer.from(text, 'utf8');
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

/** How many bytes `text` takes in UTF-8. */
export function utf8Length(text: string): number {
  return isAscii(text) ? text.length : Buffer.byteLength(text, 'utf8');
}

/** UTF-8 bytes as a string (invalid sequences become U+FFFD, as Buffer decodes them). */
export function utf8Text(b: Uint8Array): string {
  for (let i = 0; i < b.length; i++) {
    if (b[i]! > 0x7f) return Buffer.from(b.buffer, b.byteOffset, b.length).toString('utf8');
  }
  let s = '';
  for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]!);
  return s;
}
