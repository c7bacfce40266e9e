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
// Before starting Node it offers the call to the node agent (flatnetd), which runs this same file's
// bundle in its warm process (src/agent/cni-server.ts) and answers in a few milliseconds instead of a
// Node start. The agent listens at /run/flatnet/cni-<inode of its network namespace>.sock, so a call
// made in a node's namespace reaches that node's agent and no other. The exchange:
//   1. -> one frame: u32 length, then NUL-terminated fields: "FNC1", this build's id, our mount
//      namespace (readlink /proc/self/ns/mnt), this file's path, then the environment, one per field.
//   2. <- one byte: 'Y' (the agent will serve it) or 'N' (it will not: another mount namespace, a
//      build it cannot load, netlink settings it cannot honour, or it is stopping).
//   3. -> stdin, to its end, then shutdown(SHUT_WR).
//   4. <- u8 exit status, u32 length of stdout, stdout, then stderr to the end of the stream.
// Anything short of a 'Y' (no socket, no listener, a timeout, an 'N') leaves stdin untouched and falls
// back to starting Node here, so the plugin never depends on the agent. After a 'Y' the agent may have
// done part of the work. A call that is safe to run twice (every verb but ADD: DEL and GC are
// idempotent, CHECK, STATUS and VERSION change nothing) keeps a copy of its stdin in a memfd while it
// streams it, and if the agent ends before answering, starts Node here on that copy. An ADD cannot be
// repeated (its first half may hold the address and the veth): it gets the CNI error 11, "try again",
// which runtimes answer with a DEL and a new ADD. FLATNET_CNI_AGENT=off skips the agent.
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

#ifndef BUILD_ID
#error "build with -DBUILD_ID=\"<16 hex digits>\" (scripts/build.mjs does)"
#endif
// ErrorCode.TryAgainLater in the CNI spec: the agent took the call and ended before answering.
#define TRY_AGAIN_CODE "11"

#define SYS_read 0
#define SYS_write 1
#define SYS_open 2
#define SYS_close 3
#define SYS_poll 7
#define SYS_lseek 8
#define SYS_dup2 33
#define SYS_socket 41
#define SYS_connect 42
#define SYS_sendto 44
#define SYS_shutdown 48
#define SYS_setsockopt 54
#define O_RDONLY 0
#define SYS_execve 59
#define SYS_exit 60
#define SYS_readlink 89
#define SYS_memfd_create 319
#define MFD_CLOEXEC 1
#define SEEK_SET 0
#define ENOENT 2
#define EINTR 4
#define EACCES 13
#define EAGAIN 11
#define ENOTDIR 20
#define AF_UNIX 1
#define SOCK_STREAM 1
#define SOCK_CLOEXEC 0x80000
#define SOL_SOCKET 1
#define SO_RCVTIMEO 20
#define SO_SNDTIMEO 21
#define MSG_NOSIGNAL 0x4000
#define SHUT_WR 1
#define POLLIN 1
#define POLLOUT 4

static long syscall6(long n, long a, long b, long c, long d, long e, long f) {
  long ret;
  register long r10 __asm__("r10") = d;
  register long r8 __asm__("r8") = e;
  register long r9 __asm__("r9") = f;
  __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9) : "rcx", "r11", "memory");
  return ret;
}

static long syscall3(long n, long a, long b, long c) { return syscall6(n, a, b, c, 0, 0, 0); }

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

// Runtimes read a failed plugin's stdout as CNI error JSON. `what` is one of the fixed strings in this
// file, so it needs no escaping.
__attribute__((noreturn)) static void fail_with(const char *code, const char *what) {
  put(1, "{\"cniVersion\":\"1.1.0\",\"code\":");
  put(1, code);
  put(1, ",\"msg\":\"flatnet: ");
  put(1, what);
  put(1, "\"}\n");
  put(2, "flatnet: ");
  put(2, what);
  put(2, "\n");
  syscall3(SYS_exit, 1, 0, 0);
  __builtin_unreachable();
}

__attribute__((noreturn)) static void fail(const char *what) { fail_with(LAUNCHER_FAILED_CODE, what); }

// After the agent took the call: it may have done part of the work, so the runtime must start over.
__attribute__((noreturn)) static void agent_failed(const char *what) { fail_with(TRY_AGAIN_CODE, what); }

// ---- The agent's fast path (see the header) ----

// Frame 1 (the environment is most of it) and the buffered stdout of the answer. Zero-filled on demand:
// untouched pages cost nothing.
static char frame[256 * 1024];
static char answer[4 * 1024 * 1024];

struct timeval_ {
  long sec, usec;
};

static int send_all(long fd, const char *p, unsigned long n) {
  while (n > 0) {
    long w = syscall6(SYS_sendto, fd, (long)p, (long)n, MSG_NOSIGNAL, 0, 0);
    if (w == -EINTR) continue;
    if (w <= 0) return 0;
    p += w;
    n -= (unsigned long)w;
  }
  return 1;
}

// Reads exactly n bytes (1) or fails at end of stream, timeout or error (0).
static int recv_all(long fd, char *p, unsigned long n) {
  while (n > 0) {
    long r = syscall3(SYS_read, fd, (long)p, (long)n);
    if (r == -EINTR) continue;
    if (r <= 0) return 0;
    p += r;
    n -= (unsigned long)r;
  }
  return 1;
}

// Waits until fd is ready for `events` (a runtime may hand us non-blocking pipes), at most timeout_ms.
static void wait_fd(int fd, short events, long timeout_ms) {
  struct {
    int fd;
    short events, revents;
  } pfd = {fd, events, 0};
  syscall3(SYS_poll, (long)&pfd, 1, timeout_ms);
}

// Writes all n bytes to fd (a pipe the runtime gave us, or a memfd); 0 when it cannot.
static int write_all(long fd, const char *p, unsigned long n) {
  while (n > 0) {
    long w = syscall3(SYS_write, fd, (long)p, (long)n);
    if (w == -EAGAIN) wait_fd((int)fd, POLLOUT, 1000);
    if (w == -EINTR || w == -EAGAIN) continue;
    if (w <= 0) return 0;
    p += w;
    n -= (unsigned long)w;
  }
  return 1;
}

static void set_timeout(long fd, int opt, long seconds) {
  struct timeval_ tv = {seconds, 0};
  syscall6(SYS_setsockopt, fd, SOL_SOCKET, opt, (long)&tv, sizeof tv, 0);
}

// Appends s and its NUL to the frame at *len; 0 when it does not fit.
static int field(unsigned long *len, const char *s) {
  unsigned long n = length(s) + 1;
  if (*len + n > sizeof frame) return 0;
  for (unsigned long i = 0; i < n; i++) frame[*len + i] = s[i];
  *len += n;
  return 1;
}


// The agent took the call and ended (or wedged) before answering. With a copy of stdin (a call safe to
// run twice), that copy becomes stdin and the caller starts Node on it; without one, "try again".
static void take_over(long sock, long copy, const char *what) {
  if (copy < 0) agent_failed(what);
  syscall3(SYS_close, sock, 0, 0);
  if (syscall3(SYS_lseek, copy, 0, SEEK_SET) != 0 || syscall3(SYS_dup2, copy, 0, 0) != 0) agent_failed(what);
  syscall3(SYS_close, copy, 0, 0);
}

// Every verb but ADD may run twice: DEL and GC are idempotent, CHECK, STATUS and VERSION change nothing.
static int safe_to_repeat(char **envp) {
  for (char **e = envp; *e; e++)
    if (starts_with(*e, "CNI_COMMAND=")) {
      const char *c = *e + sizeof "CNI_COMMAND=" - 1;
      return c[0] != 0 && !(c[0] == 'A' && c[1] == 'D' && c[2] == 'D' && c[3] == 0);
    }
  return 0;
}

// Offers the call to the agent. Returns when the agent is not there or declines (nothing consumed), or
// when it failed a call that is safe to repeat (stdin is then a copy of the call's); otherwise writes the
// agent's answer and exits with its status.
static void try_agent(char **envp) {
  char ns[64];
  long n = syscall3(SYS_readlink, (long)"/proc/self/ns/net", (long)ns, sizeof ns - 1);
  if (n <= 5 || ns[n - 1] != ']') return;
  ns[n - 1] = 0;
  const char *inode = ns;
  while (*inode && *inode != '[') inode++;
  if (!*inode) return;
  inode++;
  struct {
    unsigned short family;
    char path[108];
  } addr = {AF_UNIX, {0}};
  static const char dir[] = "/run/flatnet/cni-";
  unsigned long k = 0;
  for (const char *q = dir; *q; q++) addr.path[k++] = *q;
  for (const char *q = inode; *q && k < 100; q++) addr.path[k++] = *q;
  for (const char *q = ".sock"; *q; q++) addr.path[k++] = *q;
  addr.path[k] = 0;

  long fd = syscall3(SYS_socket, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  // A wedged agent (stopped, overloaded) must not hold the call: until it says 'Y', Node is the fallback.
  // Set before connect: a unix connect waits (up to the send timeout) while the agent's backlog is full.
  set_timeout(fd, SO_RCVTIMEO, 2);
  set_timeout(fd, SO_SNDTIMEO, 2);
  if (syscall3(SYS_connect, fd, (long)&addr, (long)(2 + k + 1)) < 0) {
    syscall3(SYS_close, fd, 0, 0);
    return;
  }

  char mnt[64];
  long m = syscall3(SYS_readlink, (long)"/proc/self/ns/mnt", (long)mnt, sizeof mnt - 1);
  mnt[m > 0 ? m : 0] = 0;
  unsigned long len = 4;
  int fits = field(&len, "FNC1") && field(&len, BUILD_ID) && field(&len, mnt) && field(&len, self);
  for (char **e = envp; fits && *e; e++) fits = field(&len, *e);
  char verdict = 0;
  if (fits) {
    unsigned long body = len - 4;
    for (int i = 0; i < 4; i++) frame[i] = (char)(body >> (8 * i));
  }
  if (!fits || !send_all(fd, frame, len) || !recv_all(fd, &verdict, 1) || verdict != 'Y') {
    syscall3(SYS_close, fd, 0, 0);
    return;
  }

  // Committed: from here on the agent may act on the call. A call that is safe to repeat keeps its stdin
  // (no copy, if no memfd can be had: then it is answered "try again" like an ADD).
  long copy = safe_to_repeat(envp) ? syscall3(SYS_memfd_create, (long)"flatnet-cni-stdin", MFD_CLOEXEC, 0) : -1;
  const char *gone;
  int sending = 1;
  set_timeout(fd, SO_SNDTIMEO, 120);
  for (;;) {
    long r = syscall3(SYS_read, 0, (long)answer, sizeof answer);
    if (r == -EINTR) continue;
    if (r == -EAGAIN) {
      wait_fd(0, POLLIN, 120000);
      continue;
    }
    if (r < 0) agent_failed("cannot read stdin; try again");
    if (r == 0) break;
    if (copy >= 0 && !write_all(copy, answer, (unsigned long)r)) {
      syscall3(SYS_close, copy, 0, 0);
      copy = -1;
    }
    if (sending && !send_all(fd, answer, (unsigned long)r)) {
      // With a copy, the rest of stdin still goes into it, for Node.
      if (copy < 0) agent_failed("flatnetd stopped reading the call; try again");
      sending = 0;
    }
  }
  gone = "flatnetd stopped reading the call; try again";
  if (!sending) goto agent_gone;
  syscall3(SYS_shutdown, fd, SHUT_WR, 0);

  // The runtime has its own deadline; this one only bounds a wedged agent.
  set_timeout(fd, SO_RCVTIMEO, 120);
  unsigned char head[5];
  gone = "flatnetd ended before answering; try again";
  if (!recv_all(fd, (char *)head, sizeof head)) goto agent_gone;
  unsigned long out_len = head[1] | (unsigned long)head[2] << 8 | (unsigned long)head[3] << 16 | (unsigned long)head[4] << 24;
  gone = "flatnetd's answer is too long; try again";
  if (out_len > sizeof answer) goto agent_gone;
  // Stdout is written only once it is whole: a cut answer must not reach the runtime as a result.
  gone = "flatnetd ended before answering; try again";
  if (!recv_all(fd, answer, out_len)) goto agent_gone;
  if (copy >= 0) syscall3(SYS_close, copy, 0, 0);
  write_all(1, answer, out_len);
  for (;;) {
    long r = syscall3(SYS_read, fd, (long)answer, sizeof answer);
    if (r == -EINTR) continue;
    if (r <= 0) break;
    write_all(2, answer, (unsigned long)r);
  }
  syscall3(SYS_exit, head[0], 0, 0);
  __builtin_unreachable();

agent_gone:
  take_over(fd, copy, gone);
}


__attribute__((used, noreturn)) void launcher_main(long *stack) {
  long argc = stack[0];
  char **argv = (char **)(stack + 1);
  char **envp = argv + argc + 1;

  // Drop NODE_EXTRA_CA_CERTS in place (the array is ours) and remember PATH.
  const char *path = "/usr/local/bin:/usr/bin:/bin";
  int agent = 1;
  char **kept = envp;
  for (char **e = envp; *e; e++) {
    if (starts_with(*e, "NODE_EXTRA_CA_CERTS=")) continue;
    if (starts_with(*e, "PATH=")) path = *e + 5;
    if (starts_with(*e, "FLATNET_CNI_AGENT=off")) agent = 0;
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

  if (agent) try_agent(envp);

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
