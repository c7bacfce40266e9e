// The front of the CNI plugin executable (dist/cni/flatnet): a few hundred bytes of machine code that
// start Node on the JavaScript appended to this same file.
//
// Why it exists: a runtime pays the plugin's process start on every ADD and DEL. A `#!/usr/bin/env -S
// -u NODE_EXTRA_CA_CERTS node` script costs one more exec (env, dynamically linked) than Node itself,
// and on a small VM where a page fault costs ~16 us that exec is ~2.5 ms of the plugin's own time.
// This program is static, has no libc and touches a handful of pages, so the same step costs ~0.5 ms.
// It does exactly what that shebang did, no more:
//   - drops NODE_EXTRA_CA_CERTS from the environment (runtimes pass theirs through; Node would parse
//     every certificate in it at start-up, ~40 ms, for a process that never opens a TLS connection);
//   - finds `node` on PATH as env(1) does;
//   - runs `node -e LOADER <this file> <descriptor of this file>`. LOADER is JavaScript written by scripts/build.mjs (it compiles
//     this file with -DLOADER_FILE naming it, as C array initialisers); it reads the bundle that follows
//     this program in the file and runs it through V8's code cache (see build.mjs).
// If no node can be started it answers as a CNI plugin must: an error JSON on stdout, exit status 1.
//
// Built by scripts/build.mjs with: gcc -static -nostdlib -fno-pie -no-pie (x86-64 only; on other
// machines the build writes the script launcher instead).

#if !defined(__x86_64__) || !defined(__linux__)
#error "native/launcher.c is for x86-64 Linux; scripts/build.mjs falls back to a script launcher elsewhere"
#endif

#ifndef LOADER_FILE
#error "build with -DLOADER_FILE=\"path\" (scripts/build.mjs does)"
#endif
// ErrorCode.LauncherFailed in src/cni/errors.ts (test/integration/cni-launcher.test.ts checks they agree).
#define LAUNCHER_FAILED_CODE "106"

static const char LOADER[] = {
#include LOADER_FILE
};

#define SYS_write 1
#define SYS_open 2
#define O_RDONLY 0
#define SYS_execve 59
#define SYS_exit 60
#define SYS_readlink 89
#define ENOENT 2
#define EACCES 13
#define ENOTDIR 20

static long syscall3(long n, long a, long b, long c) {
  long ret;
  __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
  return ret;
}

static unsigned long length(const char *s) {
  unsigned long n = 0;
  while (s[n]) n++;
  return n;
}

static int starts_with(const char *s, const char *prefix) {
  while (*prefix)
    if (*s++ != *prefix++) return 0;
  return 1;
}

static void put(int fd, const char *s) { syscall3(SYS_write, fd, (long)s, (long)length(s)); }

static char self[4096];
static char candidate[4096];

__attribute__((noreturn)) static void fail(const char *what) {
  // Runtimes read a failed plugin's stdout as CNI error JSON. `what` is one of the fixed strings below,
  // so it needs no escaping.
  put(1, "{\"cniVersion\":\"1.1.0\",\"code\":" LAUNCHER_FAILED_CODE ",\"msg\":\"flatnet: ");
  put(1, what);
  put(1, "\"}\n");
  put(2, "flatnet: ");
  put(2, what);
  put(2, "\n");
  syscall3(SYS_exit, 1, 0, 0);
  __builtin_unreachable();
}

__attribute__((used, noreturn)) void launcher_main(long *stack) {
  long argc = stack[0];
  char **argv = (char **)(stack + 1);
  char **envp = argv + argc + 1;

  // Drop NODE_EXTRA_CA_CERTS in place (the array is ours) and remember PATH.
  const char *path = "/usr/local/bin:/usr/bin:/bin";
  char **kept = envp;
  for (char **e = envp; *e; e++) {
    if (starts_with(*e, "NODE_EXTRA_CA_CERTS=")) continue;
    if (starts_with(*e, "PATH=")) path = *e + 5;
    *kept++ = *e;
  }
  *kept = 0;

  // This file's own path: its directory holds the code cache and the netlink addon. /proc/self/exe names
  // the file itself even when the runtime called a symlink; argv[0] is the fallback where /proc is not
  // mounted. A file replaced (renamed over, as an upgrade does) since this exec reads "<path> (deleted)":
  // the directory is still right, so the suffix goes.
  long n = syscall3(SYS_readlink, (long)"/proc/self/exe", (long)self, sizeof self);
  if (n > 0 && n < (long)sizeof self) {
    self[n] = 0;
    static const char deleted[] = " (deleted)";
    const long dl = (long)sizeof deleted - 1;
    if (n > dl && starts_with(self + n - dl, deleted)) self[n - dl] = 0;
  } else {
    n = 0;
  }
  if (n == 0) {
    const char *a0 = argc > 0 ? argv[0] : "";
    unsigned long len = length(a0);
    if (a0[0] != '/' || len >= sizeof self) fail("cannot find its own file (no /proc/self/exe, argv[0] not absolute)");
    for (unsigned long i = 0; i <= len; i++) self[i] = a0[i];
  }

  // The bundle is read through a descriptor of the very file that is running, not by path, so a plugin
  // replaced between this exec and Node's read still runs its own bundle (never half of two versions).
  // The descriptor stays open across exec on purpose; the loader closes it. Without /proc, by path.
  char fd_text[12] = "";
  long fd = syscall3(SYS_open, (long)"/proc/self/exe", O_RDONLY, 0);
  if (fd >= 0) {
    char digits[12];
    int k = 0;
    do digits[k++] = (char)('0' + fd % 10);
    while ((fd /= 10) > 0);
    for (int i = 0; i < k; i++) fd_text[i] = digits[k - 1 - i];
    fd_text[k] = 0;
  }

  char *node_argv[] = {"node", "-e", (char *)LOADER, self, fd_text, 0};

  // PATH search as env(1) and execvp(3) do: every directory in order, an empty entry meaning ".".
  int denied = 0;
  const char *p = path;
  for (;;) {
    const char *end = p;
    while (*end && *end != ':') end++;
    unsigned long dir_len = (unsigned long)(end - p);
    if (dir_len + sizeof "/node" < sizeof candidate) {
      unsigned long k = 0;
      if (dir_len == 0) candidate[k++] = '.';
      for (const char *q = p; q < end; q++) candidate[k++] = *q;
      for (const char *q = "/node"; *q; q++) candidate[k++] = *q;
      candidate[k] = 0;
      long err = -syscall3(SYS_execve, (long)candidate, (long)node_argv, (long)envp);
      if (err == EACCES) denied = 1;
      else if (err != ENOENT && err != ENOTDIR) break;  // it exists but would not start: stop, as env does
    }
    if (!*end) break;
    p = end + 1;
  }
  fail(denied ? "node on PATH is not executable" : "cannot start node: it is not on PATH, or it failed to start");
}

// The kernel enters with the stack holding argc, argv[], 0, envp[], 0. Hand that to C, 16-byte aligned.
__asm__(
    ".globl _start\n"
    "_start:\n"
    "  mov %rsp, %rdi\n"
    "  and $-16, %rsp\n"
    "  call launcher_main\n"
    "  hlt\n");
