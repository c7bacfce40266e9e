// The plain file calls of the CNI plugin's hot path, as part of flatnet's addon (see netlink.c).
//
// Why they exist: every CNI call is a new Node process, and Node compiles each of its own fs functions
// (and their validators and error helpers) on the first call in a process: 0.05-0.4 ms per function
// here, about 1 ms of every ADD for the dozen the IPAM, the stdin read and the sysctl read use. A call
// into this addon costs no compilation. src/linux/files.ts uses these when the addon is loaded and
// node:fs otherwise, with the same results and the same error codes, so nothing else has to care.
//
// Each function is one or a few system calls and nothing more; which calls to make, and what a result
// means, stays in TypeScript. Errors are thrown as Error objects whose `code` is the errno's name
// ("ENOENT", "EEXIST", ...), as Node's are, and whose message names the call and the path.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "addon.h"

#define PATH_CAP 4096

static napi_value fail(napi_env env, const char *call, const char *path, int err) {
  char msg[PATH_CAP + 160];
  const char *name = strerrorname_np(err);
  snprintf(msg, sizeof msg, "%s: %s, %s '%s'", name ? name : "EIO", strerror(err), call, path);
  napi_throw_error(env, name ? name : "EIO", msg);
  return NULL;
}

// Copies argument `v` into `buf` as a path: a non-empty string, shorter than PATH_CAP, without NUL bytes
// (a NUL would silently cut the path short in C, where Node refuses it).
static int path_arg(napi_env env, napi_value v, char *buf, const char *call) {
  size_t len = 0;
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_string || napi_get_value_string_utf8(env, v, buf, PATH_CAP, &len) != napi_ok || len == 0 ||
      len >= PATH_CAP - 1 || strlen(buf) != len) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s: the path must be a non-empty string without NUL bytes, under %d bytes", call, PATH_CAP - 1);
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", msg);
    return 0;
  }
  return 1;
}

static int int_arg(napi_env env, napi_value v, int *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) return 0;
  return napi_get_value_int32(env, v, out) == napi_ok;
}

// The UTF-8 bytes of string argument `v`, malloc'ed (the caller frees).
static char *text_arg(napi_env env, napi_value v, size_t *len) {
  size_t n = 0;
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_string || napi_get_value_string_utf8(env, v, NULL, 0, &n) != napi_ok) return NULL;
  char *out = malloc(n + 1);
  if (out && napi_get_value_string_utf8(env, v, out, n + 1, len) != napi_ok) {
    free(out);
    return NULL;
  }
  return out;
}

#define ARGS(n)                                              \
  size_t argc = n;                                           \
  napi_value argv[n];                                        \
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);      \
  for (size_t i = argc; i < n; i++) napi_get_undefined(env, &argv[i])

// Waits until `fd` (a non-blocking pipe a runtime handed over) is ready for `events` instead of failing.
static void wait_until_ready(int fd, short events) {
  struct pollfd p = {.fd = fd, .events = events};
  poll(&p, 1, -1);
}

// Reads `fd` to its end; returns a string (UTF-8, as Node decodes) or a Buffer.
static napi_value read_to_end(napi_env env, int fd, int as_text, const char *call, const char *path) {
  size_t cap = 8192, used = 0;
  char *buf = malloc(cap);
  if (!buf) return fail(env, call, path, ENOMEM);
  for (;;) {
    if (used == cap) {
      char *bigger = realloc(buf, cap * 2);
      if (!bigger) {
        free(buf);
        return fail(env, call, path, ENOMEM);
      }
      buf = bigger;
      cap *= 2;
    }
    ssize_t n = read(fd, buf + used, cap - used);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      wait_until_ready(fd, POLLIN);
      continue;
    }
    if (n < 0) {
      int err = errno;
      free(buf);
      return fail(env, call, path, err);
    }
    if (n == 0) break;
    used += (size_t)n;
  }
  napi_value out;
  napi_status st = as_text ? napi_create_string_utf8(env, buf, used, &out) : napi_create_buffer_copy(env, used, buf, NULL, &out);
  free(buf);
  if (st != napi_ok) return fail(env, call, path, ENOMEM);
  return out;
}

// readText(path) -> the whole file as a string
static napi_value ReadText(napi_env env, napi_callback_info info) {
  ARGS(1);
  char path[PATH_CAP];
  if (!path_arg(env, argv[0], path, "readText")) return NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(env, "open", path, errno);
  napi_value out = read_to_end(env, fd, 1, "read", path);
  close(fd);
  return out;
}

// readFd(fd) -> Buffer of everything until end of file (the plugin's stdin)
static napi_value ReadFd(napi_env env, napi_callback_info info) {
  ARGS(1);
  int fd;
  if (!int_arg(env, argv[0], &fd)) {
    napi_throw_type_error(env, NULL, "readFd(fd: number)");
    return NULL;
  }
  return read_to_end(env, fd, 0, "read", fd == 0 ? "stdin" : "fd");
}

static int write_at_start(int fd, const char *p, size_t n) {
  size_t off = 0;
  while (off < n) {
    ssize_t w = pwrite(fd, p + off, n - off, (off_t)off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return -1;
    off += (size_t)w;
  }
  return 0;
}

// writeFile(path, text, mode, exclusive): exclusive creates the file or fails with EEXIST; otherwise an
// existing file is overwritten in place and then cut to length (never opened with O_TRUNC: see
// DiskStore.setLastReserved for what that costs on ext4).
static napi_value WriteFile(napi_env env, napi_callback_info info) {
  ARGS(4);
  char path[PATH_CAP];
  int mode;
  bool exclusive = false;
  if (!path_arg(env, argv[0], path, "writeFile")) return NULL;
  if (!int_arg(env, argv[2], &mode) || napi_get_value_bool(env, argv[3], &exclusive) != napi_ok) {
    napi_throw_type_error(env, NULL, "writeFile(path, text, mode: number, exclusive: boolean)");
    return NULL;
  }
  size_t len = 0;
  char *text = text_arg(env, argv[1], &len);
  if (!text) {
    napi_throw_type_error(env, NULL, "writeFile: text must be a string");
    return NULL;
  }
  int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (exclusive ? O_EXCL : 0), (mode_t)mode);
  if (fd < 0) {
    int err = errno;
    free(text);
    return fail(env, "open", path, err);
  }
  int err = 0;
  if (write_at_start(fd, text, len) < 0) err = errno;
  free(text);
  if (!err && !exclusive && ftruncate(fd, (off_t)len) < 0) err = errno;
  if (close(fd) < 0 && !err && errno != EINTR) err = errno;
  return err ? fail(env, "write", path, err) : NULL;
}

// writeFd(fd, text): all of it, waiting out EAGAIN on a non-blocking pipe (the plugin's answer)
static napi_value WriteFd(napi_env env, napi_callback_info info) {
  ARGS(2);
  int fd;
  size_t len = 0;
  if (!int_arg(env, argv[0], &fd)) {
    napi_throw_type_error(env, NULL, "writeFd(fd: number, text: string)");
    return NULL;
  }
  char *text = text_arg(env, argv[1], &len);
  if (!text) {
    napi_throw_type_error(env, NULL, "writeFd: text must be a string");
    return NULL;
  }
  size_t off = 0;
  while (off < len) {
    ssize_t w = write(fd, text + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) {
      wait_until_ready(fd, POLLOUT);
      continue;
    }
    if (w < 0) {
      int err = errno;
      free(text);
      return fail(env, "write", fd == 1 ? "stdout" : "fd", err);
    }
    off += (size_t)w;
  }
  free(text);
  return NULL;
}

// link(existing, newPath)
static napi_value Link(napi_env env, napi_callback_info info) {
  ARGS(2);
  char from[PATH_CAP], to[PATH_CAP];
  if (!path_arg(env, argv[0], from, "link") || !path_arg(env, argv[1], to, "link")) return NULL;
  return link(from, to) < 0 ? fail(env, "link", to, errno) : NULL;
}

// unlink(path)
static napi_value Unlink(napi_env env, napi_callback_info info) {
  ARGS(1);
  char path[PATH_CAP];
  if (!path_arg(env, argv[0], path, "unlink")) return NULL;
  return unlink(path) < 0 ? fail(env, "unlink", path, errno) : NULL;
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

// makeDirs(path, mode): `mkdir -p` (the mode applies to the directories it creates; an existing directory
// is success, an existing file EEXIST)
static napi_value MakeDirs(napi_env env, napi_callback_info info) {
  ARGS(2);
  char path[PATH_CAP];
  int mode;
  if (!path_arg(env, argv[0], path, "makeDirs")) return NULL;
  if (!int_arg(env, argv[1], &mode)) {
    napi_throw_type_error(env, NULL, "makeDirs(path, mode: number)");
    return NULL;
  }
  if (mkdir(path, (mode_t)mode) == 0) return NULL;
  if (errno == EEXIST) return is_dir(path) ? NULL : fail(env, "mkdir", path, EEXIST);
  if (errno != ENOENT) return fail(env, "mkdir", path, errno);
  // A parent is missing (the uncommon case: the network's first ADD): create each level in turn.
  for (char *p = path + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    int failed = mkdir(path, (mode_t)mode) < 0 && !(errno == EEXIST && is_dir(path));
    int err = errno;
    *p = '/';
    if (failed) {
      *p = 0;
      return fail(env, "mkdir", path, err == EEXIST ? ENOTDIR : err);
    }
  }
  if (mkdir(path, (mode_t)mode) < 0 && !(errno == EEXIST && is_dir(path))) return fail(env, "mkdir", path, errno);
  return NULL;
}

// listDir(path) -> the names in it, without "." and ".."
static napi_value ListDir(napi_env env, napi_callback_info info) {
  ARGS(1);
  char path[PATH_CAP];
  if (!path_arg(env, argv[0], path, "listDir")) return NULL;
  DIR *dir = opendir(path);
  if (!dir) return fail(env, "scandir", path, errno);
  napi_value names;
  napi_create_array(env, &names);
  uint32_t n = 0;
  for (;;) {
    errno = 0;
    struct dirent *e = readdir(dir);
    if (!e) break;
    if (e->d_name[0] == '.' && (e->d_name[1] == 0 || (e->d_name[1] == '.' && e->d_name[2] == 0))) continue;
    napi_value name;
    napi_create_string_utf8(env, e->d_name, NAPI_AUTO_LENGTH, &name);
    napi_set_element(env, names, n++, name);
  }
  int err = errno;
  closedir(dir);
  return err ? fail(env, "scandir", path, err) : names;
}

// isDirectory(path) -> boolean (false when it does not exist or cannot be looked at)
static napi_value IsDirectory(napi_env env, napi_callback_info info) {
  ARGS(1);
  char path[PATH_CAP];
  if (!path_arg(env, argv[0], path, "isDirectory")) return NULL;
  napi_value out;
  napi_get_boolean(env, is_dir(path), &out);
  return out;
}

// openReadOnly(path) -> fd (for a network namespace file; closed with the addon's close)
static napi_value OpenReadOnly(napi_env env, napi_callback_info info) {
  ARGS(1);
  char path[PATH_CAP];
  if (!path_arg(env, argv[0], path, "openReadOnly")) return NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(env, "open", path, errno);
  napi_value out;
  napi_create_int32(env, fd, &out);
  return out;
}

napi_status define_file_calls(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"readText", NULL, ReadText, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readFd", NULL, ReadFd, NULL, NULL, NULL, napi_enumerable, NULL},
      {"writeFile", NULL, WriteFile, NULL, NULL, NULL, napi_enumerable, NULL},
      {"writeFd", NULL, WriteFd, NULL, NULL, NULL, napi_enumerable, NULL},
      {"link", NULL, Link, NULL, NULL, NULL, napi_enumerable, NULL},
      {"unlink", NULL, Unlink, NULL, NULL, NULL, napi_enumerable, NULL},
      {"makeDirs", NULL, MakeDirs, NULL, NULL, NULL, napi_enumerable, NULL},
      {"listDir", NULL, ListDir, NULL, NULL, NULL, napi_enumerable, NULL},
      {"isDirectory", NULL, IsDirectory, NULL, NULL, NULL, napi_enumerable, NULL},
      {"openReadOnly", NULL, OpenReadOnly, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
