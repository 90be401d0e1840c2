/*
 * diskbench: the test guest's disk benchmark (mamori bench storage).
 *
 * usage: diskbench DEVICE MIB SECONDS
 *
 * Opens DEVICE with O_RDWR|O_DIRECT (page-aligned buffers, so the page cache
 * is out of the way) and measures, in this order:
 *   seq write   MIB MiB from offset 0 in 1 MiB writes, then fdatasync -> MB/s
 *   seq read    the same range in 1 MiB reads                          -> MB/s
 *   rand write  4 KiB writes at random 4 KiB-aligned offsets in the first
 *               MIB MiB, queue depth 1, for SECONDS, then fdatasync
 *               (counted in the time)                                  -> IOPS
 *   rand read   the same with reads                                    -> IOPS
 * MB/s are decimal (1e6 bytes). Write buffers hold non-zero pseudo-random
 * bytes, so no zero detection can skip the work. THE DEVICE'S FIRST MIB MiB
 * ARE OVERWRITTEN.
 *
 * Prints exactly one line on stdout, with one write():
 *   mamori-guest diskbench dev=NAME size_mib=MIB seq_write_mbps=X seq_read_mbps=Y rand_write_iops=Z rand_read_iops=W
 * or, exiting non-zero:
 *   mamori-guest diskbench dev=NAME error=WHAT      (no spaces in WHAT)
 * NAME is the basename of DEVICE.
 *
 * Built with gcc -static -O2 by src/guest/build-test-guest.ts.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SEQ_BLOCK (1024u * 1024u)
#define RAND_BLOCK 4096u
#define CLOCK_EVERY 64u
#define MAX_MIB (16u * 1024u * 1024u) /* 16 TiB: keeps every product in range */

static char dev_name[128] = "-";

/* One write() for the whole line, so it never interleaves with other console output. */
static void emit(const char *line) {
  size_t n = strlen(line);
  while (n > 0) {
    ssize_t w = write(STDOUT_FILENO, line, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    line += w;
    n -= (size_t)w;
  }
}

/* Spaces (and anything else odd) in a token become '_', so a parser can split on spaces. */
static void tokenize(char *dst, size_t cap, const char *src) {
  size_t i = 0;
  for (; src[i] && i + 1 < cap; i++) {
    unsigned char c = (unsigned char)src[i];
    dst[i] = (c <= ' ' || c >= 0x7f) ? '_' : (char)c;
  }
  dst[i] = '\0';
}

/* Prints the error line: WHAT, then ':' and errno's text when err != 0. */
static int fail(const char *what, int err) {
  char value[256], line[512];
  if (err != 0) {
    char raw[200];
    snprintf(raw, sizeof raw, "%s:%s", what, strerror(err));
    tokenize(value, sizeof value, raw);
  } else {
    tokenize(value, sizeof value, what);
  }
  snprintf(line, sizeof line, "mamori-guest diskbench dev=%s error=%s\n", dev_name, value);
  emit(line);
  return 1;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* xorshift64*: fast, and good enough for offsets and fill bytes. */
static uint64_t rng_state;
static uint64_t rng(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1DULL;
}

static void fill_nonzero(uint8_t *buf, size_t n) {
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    for (size_t k = 0; k < 8 && i + k < n; k++) {
      uint8_t b = (uint8_t)(v >> (8 * k));
      buf[i + k] = b ? b : 0xA5;
    }
  }
}

/* Whole-block pwrite/pread; a short transfer is an error (O_DIRECT needs whole blocks). */
static int xfer(int fd, int writing, uint8_t *buf, size_t n, off_t off) {
  ssize_t r;
  do r = writing ? pwrite(fd, buf, n, off) : pread(fd, buf, n, off);
  while (r < 0 && errno == EINTR);
  if (r < 0) return errno ? errno : EIO;
  if ((size_t)r != n) return EIO;
  return 0;
}

static int parse_positive(const char *s, double max, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno != 0 || end == s || *end != '\0' || !(v > 0) || v > max) return -1;
  *out = v;
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 2) {
    const char *slash = strrchr(argv[1], '/');
    tokenize(dev_name, sizeof dev_name, slash ? slash + 1 : argv[1]);
  }
  if (argc != 4) {
    fprintf(stderr, "usage: diskbench DEVICE MIB SECONDS\n");
    fail("usage", 0);
    return 2;
  }
  double mib_d, secs;
  if (parse_positive(argv[2], MAX_MIB, &mib_d) != 0 || mib_d != (double)(uint64_t)mib_d) {
    fail("MIB_must_be_a_positive_integer", 0);
    return 2;
  }
  if (parse_positive(argv[3], 86400, &secs) != 0) {
    fail("SECONDS_must_be_positive", 0);
    return 2;
  }
  const uint64_t mib = (uint64_t)mib_d;
  const uint64_t bytes = mib * SEQ_BLOCK;
  const uint64_t rand_blocks = bytes / RAND_BLOCK;

  int fd = open(argv[1], O_RDWR | O_DIRECT | O_CLOEXEC);
  if (fd < 0) return fail("open", errno);

  struct stat st;
  uint64_t size;
  if (fstat(fd, &st) != 0) return fail("stat", errno);
  if (S_ISBLK(st.st_mode)) {
    if (ioctl(fd, BLKGETSIZE64, &size) != 0) return fail("size", errno);
  } else {
    size = (uint64_t)st.st_size;
  }
  if (size < bytes) {
    char what[96];
    snprintf(what, sizeof what, "device_smaller_than_%llu_MiB:%llu_MiB", (unsigned long long)mib, (unsigned long long)(size / SEQ_BLOCK));
    return fail(what, 0);
  }

  uint8_t *wbuf, *rbuf;
  int e = posix_memalign((void **)&wbuf, 4096, SEQ_BLOCK);
  if (e == 0) e = posix_memalign((void **)&rbuf, 4096, SEQ_BLOCK);
  if (e != 0) return fail("posix_memalign", e);

  struct timespec seed;
  clock_gettime(CLOCK_REALTIME, &seed);
  rng_state = ((uint64_t)seed.tv_sec * 1000000007ULL) ^ (uint64_t)seed.tv_nsec ^ ((uint64_t)getpid() << 32) ^ 0x9E3779B97F4A7C15ULL;
  if (rng_state == 0) rng_state = 1;
  fill_nonzero(wbuf, SEQ_BLOCK);

  /* Sequential write, fdatasync included. */
  double t0 = now();
  for (uint64_t off = 0; off < bytes; off += SEQ_BLOCK) {
    fill_nonzero(wbuf, 8); /* every block differs */
    if ((e = xfer(fd, 1, wbuf, SEQ_BLOCK, (off_t)off)) != 0) return fail("seq_write", e);
  }
  if (fdatasync(fd) != 0) return fail("seq_write_fdatasync", errno);
  double seq_write = (double)bytes / 1e6 / (now() - t0);

  /* Sequential read of the same range. */
  t0 = now();
  for (uint64_t off = 0; off < bytes; off += SEQ_BLOCK) {
    if ((e = xfer(fd, 0, rbuf, SEQ_BLOCK, (off_t)off)) != 0) return fail("seq_read", e);
  }
  double seq_read = (double)bytes / 1e6 / (now() - t0);

  /* Random 4 KiB writes, queue depth 1, then fdatasync (counted). */
  uint64_t ops = 0;
  double elapsed;
  t0 = now();
  for (;;) {
    for (unsigned i = 0; i < CLOCK_EVERY; i++, ops++) {
      uint64_t off = (rng() % rand_blocks) * RAND_BLOCK;
      fill_nonzero(wbuf, 8);
      if ((e = xfer(fd, 1, wbuf, RAND_BLOCK, (off_t)off)) != 0) return fail("rand_write", e);
    }
    if (now() - t0 >= secs) break;
  }
  if (fdatasync(fd) != 0) return fail("rand_write_fdatasync", errno);
  elapsed = now() - t0;
  double rand_write = (double)ops / elapsed;

  /* Random 4 KiB reads, queue depth 1. */
  ops = 0;
  t0 = now();
  for (;;) {
    for (unsigned i = 0; i < CLOCK_EVERY; i++, ops++) {
      uint64_t off = (rng() % rand_blocks) * RAND_BLOCK;
      if ((e = xfer(fd, 0, rbuf, RAND_BLOCK, (off_t)off)) != 0) return fail("rand_read", e);
    }
    elapsed = now() - t0;
    if (elapsed >= secs) break;
  }
  double rand_read = (double)ops / elapsed;

  close(fd);
  char line[512];
  snprintf(line, sizeof line,
           "mamori-guest diskbench dev=%s size_mib=%llu seq_write_mbps=%.1f seq_read_mbps=%.1f rand_write_iops=%.1f rand_read_iops=%.1f\n",
           dev_name, (unsigned long long)mib, seq_write, seq_read, rand_write, rand_read);
  emit(line);
  return 0;
}
