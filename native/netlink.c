// flatnet's netlink socket, as a tiny Node-API addon.
//
// Why it exists: Node has no AF_NETLINK sockets, so without it every kernel change costs a process
// start (`ip`, `nft`), and on small machines one process start costs about what a whole CNI ADD may.
// This file only moves bytes: it opens a netlink socket (optionally inside another network namespace),
// sends one request or batch and returns every reply datagram. Encoding and decoding the messages is
// TypeScript (src/linux/netlink/), where it is typed and unit-tested without root.
//
// Everything here is synchronous on purpose: the plugin is a one-shot process that does one thing at a
// time, and the kernel answers a non-dump request within the send() call itself.
//
// It also hands the plugin's loader its own code (mapFile, readBundle, at the end of this file), and gives
// the plugin plain file calls (files.c), because it is the one native piece the plugin loads anyway: see
// there for why.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <node_api.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "addon.h"

#ifndef NETLINK_EXT_ACK
#define NETLINK_EXT_ACK 11
#endif

#define RECV_CHUNK (256 * 1024)

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[256];
  const char *name = strerrorname_np(err);
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_throw_error(env, name ? name : "EIO", msg);
  return NULL;
}

static int get_int(napi_env env, napi_value v, int *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) return 0;
  return napi_get_value_int32(env, v, out) == napi_ok;
}

// open(protocol, netnsFd?, timeoutMs?) -> fd
// With netnsFd, the socket is created inside that network namespace: this thread enters it, creates the
// socket and comes back before returning (a socket keeps the namespace it was created in). Only the
// calling thread switches; libuv's pool threads never see the other namespace.
static napi_value Open(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int proto, nsfd = -1, timeout_ms = 5000;
  if (argc < 1 || !get_int(env, argv[0], &proto)) {
    napi_throw_type_error(env, NULL, "open(protocol, netnsFd?, timeoutMs?): protocol must be a number");
    return NULL;
  }
  if (argc >= 2) get_int(env, argv[1], &nsfd);
  if (argc >= 3) get_int(env, argv[2], &timeout_ms);

  int home = -1;
  if (nsfd >= 0) {
    home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (home < 0) return throw_errno(env, "open /proc/thread-self/ns/net", errno);
    if (setns(nsfd, CLONE_NEWNET) < 0) {
      int err = errno;
      close(home);
      return throw_errno(env, "setns to the target network namespace", err);
    }
  }
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, proto);
  int sock_err = errno;
  if (home >= 0) {
    // Staying in the pod's namespace would silently misdirect everything this process does next.
    if (setns(home, CLONE_NEWNET) < 0) abort();
    close(home);
  }
  if (fd < 0) return throw_errno(env, "socket(AF_NETLINK)", sock_err);

  struct sockaddr_nl local = {.nl_family = AF_NETLINK};
  if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "bind(AF_NETLINK)", err);
  }
  int one = 1, rcvbuf = 4 * 1024 * 1024;
  setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);  // error strings from the kernel
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

  napi_value result;
  napi_create_int32(env, fd, &result);
  return result;
}

// Does this datagram end the exchange for `seq`? An NLMSG_DONE or NLMSG_ERROR (an ack is an error of 0)
// carrying the last request's sequence number does. Sets *failed when any error != 0 is seen.
static int ends_exchange(const char *buf, size_t len, unsigned seq, int *failed) {
  int done = 0;
  for (const struct nlmsghdr *h = (const struct nlmsghdr *)buf; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
    if (h->nlmsg_type == NLMSG_ERROR) {
      const struct nlmsgerr *e = NLMSG_DATA(h);
      if (h->nlmsg_len >= NLMSG_LENGTH(sizeof(int)) && e->error != 0) *failed = 1;
      if (h->nlmsg_seq == seq) done = 1;
    } else if (h->nlmsg_type == NLMSG_DONE && h->nlmsg_seq == seq) {
      done = 1;
    }
  }
  return done;
}

// transact(fd, request, lastSeq) -> Buffer of every reply datagram, concatenated
static napi_value Transact(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int fd, seq;
  void *req = NULL;
  size_t req_len = 0;
  bool is_typed = false;
  if (argc < 3 || !get_int(env, argv[0], &fd) || !get_int(env, argv[2], &seq) ||
      napi_is_typedarray(env, argv[1], &is_typed) != napi_ok || !is_typed) {
    napi_throw_type_error(env, NULL, "transact(fd, request: Uint8Array, lastSeq)");
    return NULL;
  }
  napi_typedarray_type tt;
  napi_value ab;
  size_t off;
  napi_get_typedarray_info(env, argv[1], &tt, &req_len, &req, &ab, &off);

  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  ssize_t sent;
  do sent = sendto(fd, req, req_len, 0, (struct sockaddr *)&kernel, sizeof kernel);
  while (sent < 0 && errno == EINTR);
  if (sent < 0) return throw_errno(env, "netlink send", errno);

  size_t cap = RECV_CHUNK * 2, used = 0;
  char *out = malloc(cap);
  if (!out) return throw_errno(env, "netlink receive buffer", ENOMEM);
  int failed = 0;
  for (;;) {
    if (cap - used < RECV_CHUNK) {
      char *bigger = realloc(out, cap * 2);
      if (!bigger) {
        free(out);
        return throw_errno(env, "netlink receive buffer", ENOMEM);
      }
      out = bigger;
      cap *= 2;
    }
    // Once an error has been seen, every further reply is already queued (the kernel answers within
    // send()), so an empty queue means the exchange is over rather than something to wait for.
    ssize_t n = recv(fd, out + used, RECV_CHUNK, failed ? MSG_DONTWAIT : 0);
    if (n < 0) {
      int err = errno;
      if (err == EINTR) continue;
      if (failed && (err == EAGAIN || err == EWOULDBLOCK)) break;
      free(out);
      return throw_errno(env, err == EAGAIN || err == EWOULDBLOCK ? "netlink reply timed out" : "netlink receive", err == EWOULDBLOCK ? ETIMEDOUT : err);
    }
    int done = ends_exchange(out + used, (size_t)n, (unsigned)seq, &failed);
    used += (size_t)n;
    if (done) break;
  }
  // A plain Uint8Array, not a Buffer: the decoder only slices and reads it, and Buffer's own methods are
  // JavaScript that Node compiles on first use in every plugin process.
  napi_value reply_ab, result;
  void *data = NULL;
  napi_status st = napi_create_arraybuffer(env, used, &data, &reply_ab);
  if (st == napi_ok && used > 0) memcpy(data, out, used);
  free(out);
  if (st != napi_ok || napi_create_typedarray(env, napi_uint8_array, used, reply_ab, 0, &result) != napi_ok) return throw_errno(env, "netlink reply buffer", ENOMEM);
  return result;
}

static napi_value Close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int fd;
  if (argc >= 1 && get_int(env, argv[0], &fd) && fd >= 0) close(fd);
  return NULL;
}

// exitNow(code): _exit(2), for the plugin's last step. The answer is on stdout by then (written
// synchronously) and nothing is left to flush, but process.exit would still join V8's worker threads and
// run every static destructor first: ~2 ms of a CNI call that has nothing left to do. It lives here
// because this addon is already loaded by then; a second one would cost its own dlopen.
static napi_value ExitNow(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int code = 0;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc >= 1 && !get_int(env, argv[0], &code)) code = 1;
  _exit(code & 0xff);
  return NULL;
}

// The plugin's loader (scripts/cni-plugin.mjs) starts with these two, to compile its bundle with V8's code
// cache. Reading both files the plain way costs fresh memory three times: a Buffer for the code cache, a
// Buffer for the plugin file and a V8 string copied from it. On a VM where a first touch of a page costs
// 11-16 us that was ~60 page faults, ~1 ms of every call (docs/benchmarks.md). So:
// - the code cache is mapped, not read: its pages are already in the page cache, and one fault maps
//   sixteen of them. That is safe only because the file is never changed in place: the plugin writes
//   it to a temp file and renames it, and the build removes old ones (a truncation under a live mapping
//   would be SIGBUS). The plugin file itself is NOT mapped, because installers do overwrite it in place.
// - the bundle is read once, into memory V8 then uses as an external string instead of copying it.
// Neither is ever freed: the process ends with the call, and V8 may read the source again at any time.

static void keep_forever(napi_env env, void *data, void *hint) {
  (void)env;
  (void)data;
  (void)hint;
}

// mapFile(path) -> Uint8Array over a read-only private mapping of the whole (regular, non-empty) file.
static napi_value MapFile(napi_env env, napi_callback_info info) {
  size_t argc = 1, len = 0;
  napi_value argv[1];
  char path[4096];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], path, sizeof path, &len) != napi_ok || len == 0 || len >= sizeof path - 1) {
    napi_throw_type_error(env, NULL, "mapFile(path: string)");
    return NULL;
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return throw_errno(env, "mapFile: open", errno);
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) {
    close(fd);
    return throw_errno(env, "mapFile: not a non-empty regular file", EINVAL);
  }
  void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  int err = errno;
  close(fd);
  if (p == MAP_FAILED) return throw_errno(env, "mapFile: mmap", err);
  napi_value ab, view;
  // Refused where V8's sandbox forbids outside memory: the caller then reads the file instead.
  if (napi_create_external_arraybuffer(env, p, (size_t)st.st_size, keep_forever, NULL, &ab) != napi_ok) {
    munmap(p, (size_t)st.st_size);
    return throw_errno(env, "mapFile: external ArrayBuffer", ENOTSUP);
  }
  if (napi_create_typedarray(env, napi_uint8_array, (size_t)st.st_size, ab, 0, &view) != napi_ok) return throw_errno(env, "mapFile: Uint8Array", ENOMEM);
  return view;
}

// node_api_create_external_string_latin1 exists from Node 20.4 / 18.18 on. Looked up at run time, so the
// addon still loads (and the netlink path works) on a Node without it.
typedef napi_status (*create_external_latin1_fn)(napi_env, char *, size_t, napi_finalize, void *, napi_value *, bool *);

// readBundle(fd) -> the bundle of the plugin file open at `fd`, as a Latin-1 string. The native layout's
// file ends with 10 decimal digits giving the offset where the bundle starts; the bundle runs up to them.
static napi_value ReadBundle(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int fd;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || !get_int(env, argv[0], &fd)) {
    napi_throw_type_error(env, NULL, "readBundle(fd: number)");
    return NULL;
  }
  struct stat st;
  char trailer[10];
  if (fstat(fd, &st) < 0) return throw_errno(env, "readBundle: fstat", errno);
  if (st.st_size < 10 || pread(fd, trailer, 10, st.st_size - 10) != 10) return throw_errno(env, "readBundle: no offset trailer", EINVAL);
  off_t start = 0;
  for (int i = 0; i < 10; i++) {
    if (trailer[i] < '0' || trailer[i] > '9') return throw_errno(env, "readBundle: no offset trailer", EINVAL);
    start = start * 10 + (trailer[i] - '0');
  }
  if (start > st.st_size - 10) return throw_errno(env, "readBundle: offset past the end", EINVAL);
  size_t len = (size_t)(st.st_size - 10 - start), got = 0;
  char *text = malloc(len ? len : 1);
  if (!text) return throw_errno(env, "readBundle", ENOMEM);
  while (got < len) {
    ssize_t n = pread(fd, text + got, len - got, start + (off_t)got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = n < 0 ? errno : EIO;
      free(text);
      return throw_errno(env, "readBundle: read", err);
    }
    got += (size_t)n;
  }
  napi_value result;
  bool copied = false;
  create_external_latin1_fn create_external = (create_external_latin1_fn)dlsym(RTLD_DEFAULT, "node_api_create_external_string_latin1");
  if (create_external && create_external(env, text, len, keep_forever, NULL, &result, &copied) == napi_ok) {
    if (copied) free(text);  // V8 made its own copy (and called keep_forever, which keeps nothing)
    return result;
  }
  napi_status st2 = napi_create_string_latin1(env, text, len, &result);
  free(text);
  if (st2 != napi_ok) return throw_errno(env, "readBundle: string", ENOMEM);
  return result;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"open", NULL, Open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"transact", NULL, Transact, NULL, NULL, NULL, napi_enumerable, NULL},
      {"close", NULL, Close, NULL, NULL, NULL, napi_enumerable, NULL},
      {"exitNow", NULL, ExitNow, NULL, NULL, NULL, napi_enumerable, NULL},
      {"mapFile", NULL, MapFile, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readBundle", NULL, ReadBundle, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  define_file_calls(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
