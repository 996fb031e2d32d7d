/* powercut_shim: an LD_PRELOAD library that keeps an UNDO journal of every
 * write that is not yet durable, so that a test can simulate a power cut.
 *
 * Environment:
 *   POWERCUT_DIR      files whose path starts with this directory are tracked
 *                     (except "*-shm": SQLite rebuilds its wal-index)
 *   POWERCUT_JOURNAL  directory for the undo journals (outside POWERCUT_DIR)
 * Without both, the shim does nothing.
 *
 * Only files opened for writing through open/open64/openat/openat64/creat
 * (and their _2 fortified variants) are tracked; dup/dup2/dup3 copy the
 * tracking. Journals are per inode ("<dev>-<ino>.pcj"), so renames keep the
 * history of a file. Before each write (write, pwrite, pwrite64, writev,
 * pwritev, pwritev64, pwritev2), truncation (ftruncate, ftruncate64,
 * fallocate, posix_fallocate) to a tracked file, one record is appended to the
 * file's journal: what the operation is about to overwrite or cut. When
 * fsync/fdatasync/sync_file_range(WAIT_AFTER) on any fd of the inode
 * succeeds, the journal is emptied: everything before is durable. unlink and
 * rename over a file drop the journal of an inode whose last name goes
 * (directory operations are assumed durable).
 *
 * The journal is written with the real write() straight to the page cache,
 * so it survives a kill -9 of the process; the record precedes the write it
 * describes (a record without its write is harmless: undoing it restores the
 * bytes that are there anyway). tests/integration/powercut.py reads the
 * journals after the kill and rolls the files back (see there for the model).
 *
 * Journal format (little-endian):
 *   header: "PCJ1" u64 dev, u64 ino, u32 path_len, path bytes
 *   record: u8 kind ('W' write, 'T' size change), u64 offset, u64 old_size,
 *           u64 length, u64 old_len, old bytes
 *     W: `length` bytes written at `offset`; old bytes = the bytes of
 *        [offset, min(offset+length, old_size)) before the write
 *     T: the size becomes `length`; old bytes = [length, old_size) if it shrinks
 * Thread-safety: one global mutex around the bookkeeping and the real call.
 */
/* Both the plain and the 64-bit names are defined here: the build's
 * -D_FILE_OFFSET_BITS=64 would turn one into the other. */
#undef _FILE_OFFSET_BITS
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FDS 65536
#define MAX_INODES 1024

struct inode_entry {
  int used;
  dev_t dev;
  ino_t ino;
  int journal_fd;   /* O_WRONLY|O_APPEND */
  int read_fd;      /* to read the bytes about to be overwritten */
  char journal_path[PATH_MAX];
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct inode_entry inodes[MAX_INODES];
static short fd_inode[MAX_FDS]; /* 0: untracked, else index + 1 */
static char dir_prefix[PATH_MAX];
static size_t dir_len;
static char journal_dir[PATH_MAX - 64];
static int enabled = -1;

static int (*real_open)(const char*, int, ...);
static int (*real_open64)(const char*, int, ...);
static int (*real_openat)(int, const char*, int, ...);
static int (*real_openat64)(int, const char*, int, ...);
static int (*real___open_2)(const char*, int);
static int (*real___open64_2)(const char*, int);
static int (*real___openat_2)(int, const char*, int);
static int (*real___openat64_2)(int, const char*, int);
static int (*real_creat)(const char*, mode_t);
static int (*real_creat64)(const char*, mode_t);
static int (*real_close)(int);
static int (*real_dup)(int);
static int (*real_dup2)(int, int);
static int (*real_dup3)(int, int, int);
static ssize_t (*real_write)(int, const void*, size_t);
static ssize_t (*real_pwrite)(int, const void*, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void*, size_t, off64_t);
static ssize_t (*real_writev)(int, const struct iovec*, int);
static ssize_t (*real_pwritev)(int, const struct iovec*, int, off_t);
static ssize_t (*real_pwritev64)(int, const struct iovec*, int, off64_t);
static ssize_t (*real_pwritev2)(int, const struct iovec*, int, off_t, int);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off64_t);
static int (*real_fallocate)(int, int, off_t, off_t);
static int (*real_posix_fallocate)(int, off_t, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_sync_file_range)(int, off64_t, off64_t, unsigned int);
static int (*real_unlink)(const char*);
static int (*real_unlinkat)(int, const char*, int);
static int (*real_rename)(const char*, const char*);
static int (*real_renameat)(int, const char*, int, const char*);
static int (*real_renameat2)(int, const char*, int, const char*, unsigned int);

#define RESOLVE(name) real_##name = dlsym(RTLD_NEXT, #name)

static void die(const char* what) {
  char msg[512];
  int n = snprintf(msg, sizeof msg, "powercut_shim: %s: %s\n", what, strerror(errno));
  if (real_write && n > 0) (void)!real_write(2, msg, (size_t)n);
  abort();
}

static void init(void) {
  if (enabled >= 0) return;
  RESOLVE(open); RESOLVE(open64); RESOLVE(openat); RESOLVE(openat64);
  RESOLVE(__open_2); RESOLVE(__open64_2); RESOLVE(__openat_2); RESOLVE(__openat64_2);
  RESOLVE(creat); RESOLVE(creat64); RESOLVE(close); RESOLVE(dup); RESOLVE(dup2); RESOLVE(dup3);
  RESOLVE(write); RESOLVE(pwrite); RESOLVE(pwrite64); RESOLVE(writev); RESOLVE(pwritev);
  RESOLVE(pwritev64); RESOLVE(pwritev2); RESOLVE(ftruncate); RESOLVE(ftruncate64);
  RESOLVE(fallocate); RESOLVE(posix_fallocate); RESOLVE(fsync); RESOLVE(fdatasync);
  RESOLVE(sync_file_range); RESOLVE(unlink); RESOLVE(unlinkat); RESOLVE(rename);
  RESOLVE(renameat); RESOLVE(renameat2);
  const char* d = getenv("POWERCUT_DIR");
  const char* j = getenv("POWERCUT_JOURNAL");
  if (!d || !*d || !j || !*j || strlen(d) + 2 >= sizeof dir_prefix || strlen(j) >= sizeof journal_dir) {
    enabled = 0;
    return;
  }
  char canon[PATH_MAX];
  if (realpath(d, canon) != NULL) d = canon;   /* readlink(/proc/self/fd/N) gives canonical paths */
  snprintf(dir_prefix, sizeof dir_prefix, "%s%s", d, d[strlen(d) - 1] == '/' ? "" : "/");
  dir_len = strlen(dir_prefix);
  snprintf(journal_dir, sizeof journal_dir, "%s", j);
  enabled = 1;
}

__attribute__((constructor)) static void shim_init(void) {
  pthread_mutex_lock(&mu);
  init();
  pthread_mutex_unlock(&mu);
}

/* Is the file this fd was opened as under POWERCUT_DIR (and not a -shm)? */
static int path_tracked(int fd) {
  char link[64], path[PATH_MAX];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof path - 1);
  if (n <= 0) return 0;
  path[n] = 0;
  if ((size_t)n < dir_len || strncmp(path, dir_prefix, dir_len) != 0) return 0;
  if (n >= 4 && strcmp(path + n - 4, "-shm") == 0) return 0;
  return 1;
}

static void write_all(int fd, const void* buf, size_t len) {
  const char* p = buf;
  while (len > 0) {
    ssize_t n = real_write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("journal write");
    }
    p += n;
    len -= (size_t)n;
  }
}

static int inode_for(dev_t dev, ino_t ino, int fd) {
  int free_slot = -1;
  for (int i = 0; i < MAX_INODES; ++i) {
    if (inodes[i].used && inodes[i].dev == dev && inodes[i].ino == ino) return i;
    if (!inodes[i].used && free_slot < 0) free_slot = i;
  }
  if (free_slot < 0) { errno = EMFILE; die("too many tracked inodes"); }
  struct inode_entry* e = &inodes[free_slot];
  memset(e, 0, sizeof *e);
  e->dev = dev;
  e->ino = ino;
  snprintf(e->journal_path, sizeof e->journal_path, "%s/%llx-%llx.pcj", journal_dir,
           (unsigned long long)dev, (unsigned long long)ino);
  e->journal_fd = real_open(e->journal_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (e->journal_fd < 0) die("open journal");
  char link[64];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  e->read_fd = real_open(link, O_RDONLY | O_CLOEXEC);
  if (e->read_fd < 0) die("open tracked file for reading");
  struct stat st;
  if (fstat(e->journal_fd, &st) != 0) die("fstat journal");
  if (st.st_size == 0) {   /* a journal left by an earlier run of this process is continued */
    char path[PATH_MAX];
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0) n = 0;
    uint64_t d64 = dev, i64 = ino;
    uint32_t plen = (uint32_t)n;
    char hdr[4 + 8 + 8 + 4];
    memcpy(hdr, "PCJ1", 4);
    memcpy(hdr + 4, &d64, 8);
    memcpy(hdr + 12, &i64, 8);
    memcpy(hdr + 20, &plen, 4);
    write_all(e->journal_fd, hdr, sizeof hdr);
    write_all(e->journal_fd, path, (size_t)n);
  }
  e->used = 1;
  return free_slot;
}

/* Called after a successful open of fd with `flags`. REQUIRES: mu held. */
static void track_open(int fd, int flags) {
  if (fd < 0 || fd >= MAX_FDS) return;
  fd_inode[fd] = 0;
  if (enabled != 1 || (flags & O_ACCMODE) == O_RDONLY) return;
  if (!path_tracked(fd)) return;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return;
  fd_inode[fd] = (short)(inode_for(st.st_dev, st.st_ino, fd) + 1);
}

/* The inode entry of a tracked fd, or NULL. REQUIRES: mu held. */
static struct inode_entry* entry_of(int fd) {
  if (enabled != 1 || fd < 0 || fd >= MAX_FDS || fd_inode[fd] == 0) return NULL;
  struct inode_entry* e = &inodes[fd_inode[fd] - 1];
  return e->used ? e : NULL;
}

static void append_record(struct inode_entry* e, char kind, uint64_t offset, uint64_t old_size,
                          uint64_t length, uint64_t old_from, uint64_t old_len) {
  char hdr[1 + 8 * 4];
  hdr[0] = kind;
  memcpy(hdr + 1, &offset, 8);
  memcpy(hdr + 9, &old_size, 8);
  memcpy(hdr + 17, &length, 8);
  /* the old bytes, read from the file now (they may be short if the file changed) */
  char* old = NULL;
  if (old_len > 0) {
    old = malloc(old_len);
    if (!old) die("malloc");
    size_t got = 0;
    while (got < old_len) {
      ssize_t n = pread(e->read_fd, old + got, old_len - got, (off_t)(old_from + got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += (size_t)n;
    }
    old_len = got;
  }
  memcpy(hdr + 25, &old_len, 8);
  struct iovec iov[2] = {{hdr, sizeof hdr}, {old, old_len}};
  /* one writev: a record is torn only if the process dies inside it */
  size_t total = sizeof hdr + old_len;
  ssize_t n;
  do n = real_writev(e->journal_fd, iov, old_len ? 2 : 1); while (n < 0 && errno == EINTR);
  if (n < 0) die("journal writev");
  if ((size_t)n < total) {   /* finish a short write */
    size_t done = (size_t)n;
    if (done < sizeof hdr) {
      write_all(e->journal_fd, hdr + done, sizeof hdr - done);
      done = sizeof hdr;
    }
    write_all(e->journal_fd, old + (done - sizeof hdr), total - done);
  }
  free(old);
}

static uint64_t file_size(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return 0;
  return (uint64_t)st.st_size;
}

/* Journals a write of `len` bytes at `offset` (-1: the fd's position or EOF
 * with O_APPEND). REQUIRES: mu held, e != NULL. */
static void before_write(struct inode_entry* e, int fd, int64_t offset, size_t len) {
  struct stat st;
  if (fstat(fd, &st) != 0) return;
  if (st.st_dev != e->dev || st.st_ino != e->ino) {
    /* closed behind our back (a libc-internal close) and reused: not ours */
    fd_inode[fd] = 0;
    return;
  }
  uint64_t size = (uint64_t)st.st_size;
  if (offset < 0) {
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && (fl & O_APPEND)) offset = (int64_t)size;
    else offset = lseek(fd, 0, SEEK_CUR);
    if (offset < 0) return;
  }
  uint64_t off = (uint64_t)offset, old_len = 0;
  if (off < size) old_len = (off + len < size ? off + len : size) - off;
  append_record(e, 'W', off, size, len, off, old_len);
}

static void before_resize(struct inode_entry* e, int fd, uint64_t new_size) {
  uint64_t size = file_size(fd);
  uint64_t old_len = new_size < size ? size - new_size : 0;
  append_record(e, 'T', 0, size, new_size, new_size, old_len);
}

static void synced(int fd) {
  struct inode_entry* e = entry_of(fd);
  if (!e) return;
  if (real_ftruncate(e->journal_fd, 0) != 0) die("truncate journal");
  /* the header again, so that the journal stays self-describing */
  char link[64], path[PATH_MAX];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof path - 1);
  if (n < 0) n = 0;
  uint64_t d64 = e->dev, i64 = e->ino;
  uint32_t plen = (uint32_t)n;
  char hdr[24];
  memcpy(hdr, "PCJ1", 4);
  memcpy(hdr + 4, &d64, 8);
  memcpy(hdr + 12, &i64, 8);
  memcpy(hdr + 20, &plen, 4);
  write_all(e->journal_fd, hdr, sizeof hdr);
  write_all(e->journal_fd, path, (size_t)n);
}

/* A name of a tracked directory goes away: forget the inode if it was its last. */
static void name_goes(int dirfd, const char* path) {
  if (enabled != 1) return;
  struct stat st;
  if (fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode) || st.st_nlink > 1)
    return;
  for (int i = 0; i < MAX_INODES; ++i) {
    struct inode_entry* e = &inodes[i];
    if (e->used && e->dev == st.st_dev && e->ino == st.st_ino) {
      real_close(e->journal_fd);
      real_close(e->read_fd);
      real_unlink(e->journal_path);
      e->used = 0;   /* fds still open on it write to a nameless file: not tracked */
    }
  }
}

#define LOCKED(expr) ({ pthread_mutex_lock(&mu); init(); __typeof__(expr) r_ = (expr); \
                        pthread_mutex_unlock(&mu); r_; })

static int finish_open(int fd, int flags) {
  int saved = errno;
  if (fd >= 0) track_open(fd, flags);
  errno = saved;
  return fd;
}

static mode_t mode_arg(int flags, va_list ap) {
  return (flags & (O_CREAT | __O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char* path, int flags, ...) {
  va_list ap; va_start(ap, flags); mode_t m = mode_arg(flags, ap); va_end(ap);
  pthread_mutex_lock(&mu); init();
  int fd = finish_open(real_open(path, flags, m), flags);
  pthread_mutex_unlock(&mu);
  return fd;
}
int open64(const char* path, int flags, ...) {
  va_list ap; va_start(ap, flags); mode_t m = mode_arg(flags, ap); va_end(ap);
  pthread_mutex_lock(&mu); init();
  int fd = finish_open(real_open64(path, flags, m), flags);
  pthread_mutex_unlock(&mu);
  return fd;
}
int openat(int dirfd, const char* path, int flags, ...) {
  va_list ap; va_start(ap, flags); mode_t m = mode_arg(flags, ap); va_end(ap);
  pthread_mutex_lock(&mu); init();
  int fd = finish_open(real_openat(dirfd, path, flags, m), flags);
  pthread_mutex_unlock(&mu);
  return fd;
}
int openat64(int dirfd, const char* path, int flags, ...) {
  va_list ap; va_start(ap, flags); mode_t m = mode_arg(flags, ap); va_end(ap);
  pthread_mutex_lock(&mu); init();
  int fd = finish_open(real_openat64(dirfd, path, flags, m), flags);
  pthread_mutex_unlock(&mu);
  return fd;
}
int __open_2(const char* path, int flags) {
  pthread_mutex_lock(&mu); init();
  int fd = finish_open(real___open_2(path, flags), flags);
  pthread_mutex_unlock(&mu);
  return fd;
}
int __open64_2(const char* path, int flags) {
  pthread_mutex_lock(&mu); init();
  int fd = finish_open(real___open64_2(path, flags), flags);
  pthread_mutex_unlock(&mu);
  return fd;
}
int __openat_2(int dirfd, const char* path, int flags) {
  pthread_mutex_lock(&mu); init();
  int fd = finish_open(real___openat_2(dirfd, path, flags), flags);
  pthread_mutex_unlock(&mu);
  return fd;
}
int __openat64_2(int dirfd, const char* path, int flags) {
  pthread_mutex_lock(&mu); init();
  int fd = finish_open(real___openat64_2(dirfd, path, flags), flags);
  pthread_mutex_unlock(&mu);
  return fd;
}
int creat(const char* path, mode_t mode) {
  pthread_mutex_lock(&mu); init();
  int fd = finish_open(real_creat(path, mode), O_WRONLY | O_CREAT | O_TRUNC);
  pthread_mutex_unlock(&mu);
  return fd;
}
int creat64(const char* path, mode_t mode) {
  pthread_mutex_lock(&mu); init();
  int fd = finish_open(real_creat64(path, mode), O_WRONLY | O_CREAT | O_TRUNC);
  pthread_mutex_unlock(&mu);
  return fd;
}

int close(int fd) {
  pthread_mutex_lock(&mu); init();
  if (fd >= 0 && fd < MAX_FDS) fd_inode[fd] = 0;
  int r = real_close(fd);
  pthread_mutex_unlock(&mu);
  return r;
}

static int copy_tracking(int from, int to) {
  if (to >= 0 && to < MAX_FDS) fd_inode[to] = (from >= 0 && from < MAX_FDS) ? fd_inode[from] : 0;
  return to;
}
int dup(int fd) { return LOCKED(copy_tracking(fd, real_dup(fd))); }
int dup2(int fd, int to) { return LOCKED(copy_tracking(fd, real_dup2(fd, to))); }
int dup3(int fd, int to, int flags) { return LOCKED(copy_tracking(fd, real_dup3(fd, to, flags))); }

static size_t iov_len(const struct iovec* iov, int n) {
  size_t t = 0;
  for (int i = 0; i < n; ++i) t += iov[i].iov_len;
  return t;
}

/* The untracked fast path takes no lock: fd_inode is only a hint read racily;
 * a tracked fd is re-checked under the mutex. */
#define WRITE_BODY(call, offset, len)                       \
  init();                                                   \
  if (enabled != 1 || fd < 0 || fd >= MAX_FDS || fd_inode[fd] == 0) return call; \
  pthread_mutex_lock(&mu);                                  \
  struct inode_entry* e = entry_of(fd);                     \
  if (e) before_write(e, fd, (offset), (len));              \
  __typeof__(call) r = call;                                \
  pthread_mutex_unlock(&mu);                                \
  return r;

ssize_t write(int fd, const void* buf, size_t n) { WRITE_BODY(real_write(fd, buf, n), -1, n) }
ssize_t pwrite(int fd, const void* buf, size_t n, off_t off) {
  WRITE_BODY(real_pwrite(fd, buf, n, off), off, n)
}
ssize_t pwrite64(int fd, const void* buf, size_t n, off64_t off) {
  WRITE_BODY(real_pwrite64(fd, buf, n, off), off, n)
}
ssize_t writev(int fd, const struct iovec* iov, int cnt) {
  WRITE_BODY(real_writev(fd, iov, cnt), -1, iov_len(iov, cnt))
}
ssize_t pwritev(int fd, const struct iovec* iov, int cnt, off_t off) {
  WRITE_BODY(real_pwritev(fd, iov, cnt, off), off, iov_len(iov, cnt))
}
ssize_t pwritev64(int fd, const struct iovec* iov, int cnt, off64_t off) {
  WRITE_BODY(real_pwritev64(fd, iov, cnt, off), off, iov_len(iov, cnt))
}
ssize_t pwritev2(int fd, const struct iovec* iov, int cnt, off_t off, int flags) {
  WRITE_BODY(real_pwritev2(fd, iov, cnt, off, flags), off, iov_len(iov, cnt))
}

#define RESIZE_BODY(call, new_size)                         \
  pthread_mutex_lock(&mu); init();                          \
  struct inode_entry* e = entry_of(fd);                     \
  if (e) before_resize(e, fd, (new_size));                  \
  int r = call;                                             \
  pthread_mutex_unlock(&mu);                                \
  return r;

int ftruncate(int fd, off_t len) { RESIZE_BODY(real_ftruncate(fd, len), (uint64_t)len) }
int ftruncate64(int fd, off64_t len) { RESIZE_BODY(real_ftruncate64(fd, len), (uint64_t)len) }
int fallocate(int fd, int mode, off_t off, off_t len) {
  /* only a size that grows is modelled (KEEP_SIZE, punching holes: not used by tailbox) */
  pthread_mutex_lock(&mu); init();
  struct inode_entry* e = entry_of(fd);
  if (e && !(mode & 1 /* FALLOC_FL_KEEP_SIZE */)) {
    uint64_t size = file_size(fd), end = (uint64_t)off + (uint64_t)len;
    if (end > size) before_resize(e, fd, end);
  }
  int r = real_fallocate(fd, mode, off, len);
  pthread_mutex_unlock(&mu);
  return r;
}
int posix_fallocate(int fd, off_t off, off_t len) {
  pthread_mutex_lock(&mu); init();
  struct inode_entry* e = entry_of(fd);
  if (e) {
    uint64_t size = file_size(fd), end = (uint64_t)off + (uint64_t)len;
    if (end > size) before_resize(e, fd, end);
  }
  int r = real_posix_fallocate(fd, off, len);
  pthread_mutex_unlock(&mu);
  return r;
}

int fsync(int fd) {
  pthread_mutex_lock(&mu); init();
  int r = real_fsync(fd);
  int saved = errno;
  if (r == 0) synced(fd);
  pthread_mutex_unlock(&mu);
  errno = saved;
  return r;
}
int fdatasync(int fd) {
  pthread_mutex_lock(&mu); init();
  int r = real_fdatasync(fd);
  int saved = errno;
  if (r == 0) synced(fd);
  pthread_mutex_unlock(&mu);
  errno = saved;
  return r;
}
int sync_file_range(int fd, off64_t off, off64_t n, unsigned int flags) {
  /* Not a durability guarantee (no metadata, no disk cache flush): journal kept. */
  return LOCKED(real_sync_file_range(fd, off, n, flags));
}

int unlink(const char* path) {
  pthread_mutex_lock(&mu); init();
  name_goes(AT_FDCWD, path);
  int r = real_unlink(path);
  pthread_mutex_unlock(&mu);
  return r;
}
int unlinkat(int dirfd, const char* path, int flags) {
  pthread_mutex_lock(&mu); init();
  if (!(flags & AT_REMOVEDIR)) name_goes(dirfd, path);
  int r = real_unlinkat(dirfd, path, flags);
  pthread_mutex_unlock(&mu);
  return r;
}
int rename(const char* from, const char* to) {
  pthread_mutex_lock(&mu); init();
  name_goes(AT_FDCWD, to);
  int r = real_rename(from, to);
  pthread_mutex_unlock(&mu);
  return r;
}
int renameat(int fd1, const char* from, int fd2, const char* to) {
  pthread_mutex_lock(&mu); init();
  name_goes(fd2, to);
  int r = real_renameat(fd1, from, fd2, to);
  pthread_mutex_unlock(&mu);
  return r;
}
int renameat2(int fd1, const char* from, int fd2, const char* to, unsigned int flags) {
  pthread_mutex_lock(&mu); init();
  if (!(flags & 2 /* RENAME_EXCHANGE */)) name_goes(fd2, to);
  int r = real_renameat2(fd1, from, fd2, to, flags);
  pthread_mutex_unlock(&mu);
  return r;
}
