// A minimal container root file system from Debian's busybox-static, for runtimes that need an image
// and have no registry here (podman imports the tar; the containerd test wraps it in an OCI archive).
import { copyFileSync, mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { runOk } from '../../src/linux/run.ts';

/** Fills `rootfs` with busybox and one symlink per applet, and packs it as `tarFile`. */
export async function busyboxRootfsTar(rootfs: string, tarFile: string, applets: readonly string[]): Promise<void> {
  for (const d of ['bin', 'dev', 'proc', 'sys', 'etc', 'tmp']) mkdirSync(join(rootfs, d), { recursive: true });
  copyFileSync('/bin/busybox', join(rootfs, 'bin/busybox'));
  for (const applet of applets) if (applet !== 'busybox') symlinkSync('busybox', join(rootfs, 'bin', applet));
  await runOk(['tar', '--numeric-owner', '-C', rootfs, '-cf', tarFile, '.']);
}
