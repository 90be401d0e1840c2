/*
 * mamori-wl: the test guest's write-log writer.
 *
 * Writes fixed-size records (layout in src/guest/writelog-format.ts) to a block
 * device, one at a time, each made durable (O_DIRECT|O_DSYNC pwrite, then
 * fdatasync) before it is acknowledged on the console. The acknowledgement is
 * the promise a test checks a replica against, so it must never precede
 * durability.
 *
 * usage: mamori-wl [--count N] [--console PATH|-] [--seq-file PATH] [--payload random|text] DEVICE RATE
 *   RATE      records per second, 0 = as fast as the device allows
 *   --count   stop after N records in this run (host tests)
 *   --console where acks go (default /dev/console; "-" = stdout)
 *   --seq-file file that always holds the last durable seq, replaced by rename
 *              so the heartbeat loop never reads a half-written number
 *   --payload  random (default, incompressible) or text (compressible, about 2.8x with
 *              lz4; the rule is in src/guest/writelog-text-payload.ts). Either verifies.
 *
 * Built with gcc -static -O2 by src/guest/build-test-guest.ts.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RECORD_SIZE 4096u
#define PAYLOAD_OFFSET 48u
#define PAYLOAD_WORDS 505u
#define CRC_OFFSET 4088u
#define VERSION 1u
#define SCAN_CHUNK (256u * 1024u)

static const char MAGIC[8] = {'M', 'A', 'M', 'O', 'R', 'I', 'W', 'L'};

static volatile sig_atomic_t stop_requested = 0;
static int console_fd = -1;

static void on_stop(int sig) {
  (void)sig;
  stop_requested = 1;
}

static uint32_t crc_table[256];

static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    crc_table[i] = c;
  }
}

/* Same CRC-32 as zlib's crc32(), which the verifier uses. */
static uint32_t crc32_ieee(const uint8_t *p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  while (n--) c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

static void put_u32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}
static uint64_t get_u64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static void fill_payload(uint8_t *p, uint64_t seq) {
  uint64_t state = seq * 0x9E3779B97F4A7C15ull;
  for (unsigned i = 0; i < PAYLOAD_WORDS; i++) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    put_u64(p + 8 * i, state);
  }
}

/* The text payload: keep in step with src/guest/writelog-text-payload.ts. */
static const char *const PHRASES[8] = {
    "INFO request served in ",      "WARN disk latency above ",     "kernel: eth0 link up, ",
    "systemd[1]: Started session ", "GET /index.html HTTP/1.1 200 ", "sshd: Accepted publickey for ",
    "cron: job finished with status ", "postgres: checkpoint complete: wrote ",
};
static const char *const WORDS[] = {
    "the",     "of",    "and",    "to",    "in",     "is",     "that",   "for",   "it",      "as",    "was",
    "with",    "be",    "by",     "on",    "not",    "he",     "this",   "are",   "or",      "his",   "from",
    "at",      "which", "but",    "have",  "an",     "they",   "you",    "were",  "her",     "she",   "there",
    "been",    "one",   "all",    "we",    "their",  "has",    "would",  "when",  "if",      "so",    "no",
    "will",    "more",  "can",    "out",   "up",     "who",    "them",   "some",  "could",   "into",  "its",
    "time",    "than",  "other",  "only",  "new",    "two",    "may",    "first", "then",    "do",    "any",
    "like",    "my",    "now",    "over",  "such",   "our",    "man",    "me",    "even",    "most",  "made",
    "after",   "also",  "did",    "many",  "before", "must",   "through", "back", "years",   "where", "much",
    "your",    "way",   "well",   "down",  "should", "because", "each",  "just",  "those",   "people", "how",
    "too",     "little", "state", "good",  "very",   "make",   "world",  "still", "own",     "see",   "men",
    "work",    "long",  "here",   "get",   "both",   "between", "life",  "being", "under",   "never", "day",
    "same",    "another", "know", "while", "last",   "might",  "us",     "great", "old",     "year",  "off",
    "come",    "since", "against", "go",   "came",   "right",  "used",   "take",  "three",
};
#define NWORDS (sizeof WORDS / sizeof WORDS[0])

/* Appends a string to p[*pos..len), cut at len. */
static void put_text(uint8_t *p, size_t len, size_t *pos, const char *s) {
  while (*s && *pos < len) p[(*pos)++] = (uint8_t)*s++;
}

static void fill_text_payload(uint8_t *p, uint64_t seq) {
  const size_t len = PAYLOAD_WORDS * 8;
  uint64_t state = seq * 0x9E3779B97F4A7C15ull;
  size_t pos = 0;
  while (pos < len) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    uint32_t r = (uint32_t)(state >> 32);
    if ((r & 15) < 3) {
      char num[16];
      snprintf(num, sizeof num, "%u ", (r >> 7) % 10000u);
      put_text(p, len, &pos, "\n");
      put_text(p, len, &pos, PHRASES[(r >> 4) & 7]);
      put_text(p, len, &pos, num);
    } else {
      put_text(p, len, &pos, WORDS[(r >> 8) % NWORDS]);
      put_text(p, len, &pos, " ");
    }
  }
}

/* One write() per line: the tty layer serialises whole writes, so the heartbeat
 * loop's lines and ours never interleave mid-line. */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
  char line[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n >= sizeof line) n = sizeof line - 1;
  ssize_t w;
  do w = write(console_fd, line, (size_t)n); while (w < 0 && errno == EINTR);
}

static int read_boot_id(uint8_t out[16]) {
  char text[64] = {0};
  int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY);
  if (fd < 0) return -1;
  ssize_t n = read(fd, text, sizeof text - 1);
  close(fd);
  if (n <= 0) return -1;
  int k = 0;
  for (ssize_t i = 0; i < n && k < 32; i++) {
    char c = text[i];
    int v;
    if (c >= '0' && c <= '9') v = c - '0';
    else if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') v = c - 'A' + 10;
    else continue; /* dashes and the newline */
    if (k % 2 == 0) out[k / 2] = (uint8_t)(v << 4);
    else out[k / 2] |= (uint8_t)v;
    k++;
  }
  return k == 32 ? 0 : -1;
}

/* A slot counts only if everything checks out: a record that is merely
 * present but damaged must be overwritten, not continued from. */
static int slot_valid(const uint8_t *r, uint64_t slot, uint8_t *scratch) {
  if (memcmp(r, MAGIC, 8) != 0) return 0;
  if (get_u32(r + 8) != VERSION || get_u32(r + 12) != RECORD_SIZE) return 0;
  if (get_u64(r + 16) != slot + 1) return 0;
  if (get_u32(r + 4092) != 0) return 0;
  if (crc32_ieee(r, CRC_OFFSET) != get_u32(r + CRC_OFFSET)) return 0;
  /* Either payload kind continues the log: a disk may be resumed in the other mode. */
  fill_payload(scratch, slot + 1);
  if (memcmp(r + PAYLOAD_OFFSET, scratch, PAYLOAD_WORDS * 8) == 0) return 1;
  fill_text_payload(scratch, slot + 1);
  return memcmp(r + PAYLOAD_OFFSET, scratch, PAYLOAD_WORDS * 8) == 0;
}

/* Returns the number of valid consecutive records from slot 0, or -1. */
static int64_t scan_prefix(int fd, uint64_t slots, uint8_t *buf) {
  uint8_t scratch[PAYLOAD_WORDS * 8];
  uint64_t slot = 0;
  while (slot < slots) {
    uint64_t want = (slots - slot) * RECORD_SIZE;
    if (want > SCAN_CHUNK) want = SCAN_CHUNK;
    ssize_t n = pread(fd, buf, want, (off_t)(slot * RECORD_SIZE));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (n < (ssize_t)RECORD_SIZE) break;
    for (ssize_t off = 0; off + (ssize_t)RECORD_SIZE <= n; off += RECORD_SIZE, slot++)
      if (!slot_valid(buf + off, slot, scratch)) return (int64_t)slot;
  }
  return (int64_t)slot;
}

static int write_seq_file(const char *path, uint64_t seq) {
  char tmp[512], text[32];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return -1;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return -1;
  int n = snprintf(text, sizeof text, "%llu\n", (unsigned long long)seq);
  ssize_t w = write(fd, text, (size_t)n);
  close(fd);
  if (w != n) return -1;
  return rename(tmp, path);
}

static void timespec_add_ns(struct timespec *t, uint64_t ns) {
  t->tv_sec += (time_t)(ns / 1000000000ull);
  t->tv_nsec += (long)(ns % 1000000000ull);
  if (t->tv_nsec >= 1000000000L) {
    t->tv_sec++;
    t->tv_nsec -= 1000000000L;
  }
}

static int before(const struct timespec *a, const struct timespec *b) {
  return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

static void usage(void) {
  fprintf(stderr, "usage: mamori-wl [--count N] [--console PATH|-] [--seq-file PATH] [--payload random|text] DEVICE RATE\n");
  exit(2);
}

int main(int argc, char **argv) {
  const char *console_path = "/dev/console";
  const char *seq_file = NULL;
  uint64_t max_count = 0;
  int text_payload = 0;
  int argi = 1;
  for (; argi < argc && strncmp(argv[argi], "--", 2) == 0; argi += 2) {
    if (argi + 1 >= argc) usage();
    if (strcmp(argv[argi], "--count") == 0) max_count = strtoull(argv[argi + 1], NULL, 10);
    else if (strcmp(argv[argi], "--console") == 0) console_path = argv[argi + 1];
    else if (strcmp(argv[argi], "--seq-file") == 0) seq_file = argv[argi + 1];
    else if (strcmp(argv[argi], "--payload") == 0) {
      if (strcmp(argv[argi + 1], "text") == 0) text_payload = 1;
      else if (strcmp(argv[argi + 1], "random") == 0) text_payload = 0;
      else usage();
    } else usage();
  }
  if (argc - argi != 2) usage();
  const char *device = argv[argi];
  char *end = NULL;
  unsigned long rate = strtoul(argv[argi + 1], &end, 10);
  if (end == argv[argi + 1] || *end != '\0') usage();

  if (strcmp(console_path, "-") == 0) console_fd = STDOUT_FILENO;
  else {
    console_fd = open(console_path, O_WRONLY | O_NOCTTY);
    if (console_fd < 0) {
      fprintf(stderr, "mamori-wl: cannot open console %s: %s\n", console_path, strerror(errno));
      return 1;
    }
  }
  crc_init();

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop; /* no SA_RESTART: the rate sleep must wake up */
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  int fd = open(device, O_RDWR | O_DIRECT | O_DSYNC);
  if (fd < 0 && errno == EINVAL) {
    /* tmpfs and some host filesystems refuse O_DIRECT; only host tests hit this. */
    fd = open(device, O_RDWR | O_DSYNC);
    if (fd >= 0) fprintf(stderr, "mamori-wl: %s does not support O_DIRECT, using O_DSYNC only\n", device);
  }
  if (fd < 0) {
    say("mamori-wl error open %s: %s\n", device, strerror(errno));
    return 1;
  }
  struct stat st;
  uint64_t size = 0;
  if (fstat(fd, &st) != 0) {
    say("mamori-wl error stat %s: %s\n", device, strerror(errno));
    return 1;
  }
  if (S_ISBLK(st.st_mode)) {
    if (ioctl(fd, BLKGETSIZE64, &size) != 0) {
      say("mamori-wl error size %s: %s\n", device, strerror(errno));
      return 1;
    }
  } else {
    size = (uint64_t)st.st_size;
  }
  uint64_t slots = size / RECORD_SIZE;

  uint8_t boot_id[16];
  if (read_boot_id(boot_id) != 0) {
    say("mamori-wl error cannot read /proc/sys/kernel/random/boot_id\n");
    return 1;
  }

  uint8_t *buf = NULL;
  if (posix_memalign((void **)&buf, 4096, SCAN_CHUNK) != 0) {
    say("mamori-wl error out of memory\n");
    return 1;
  }
  int64_t prefix = scan_prefix(fd, slots, buf);
  if (prefix < 0) {
    say("mamori-wl error scan %s: %s\n", device, strerror(errno));
    return 1;
  }
  uint64_t last = (uint64_t)prefix;
  if (seq_file) write_seq_file(seq_file, last);
  say("mamori-wl start resume_after=%llu slots=%llu rate=%lu%s\n", (unsigned long long)last,
      (unsigned long long)slots, rate, text_payload ? " payload=text" : "");

  uint8_t *rec = buf; /* the scan buffer is aligned and no longer needed */
  uint64_t period_ns = rate ? 1000000000ull / rate : 0;
  struct timespec next;
  clock_gettime(CLOCK_MONOTONIC, &next);
  uint64_t written = 0;

  while (!stop_requested) {
    uint64_t seq = last + 1;
    if (seq > slots) {
      say("mamori-wl full\n");
      free(buf);
      return 0;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    memset(rec, 0, RECORD_SIZE);
    memcpy(rec, MAGIC, 8);
    put_u32(rec + 8, VERSION);
    put_u32(rec + 12, RECORD_SIZE);
    put_u64(rec + 16, seq);
    put_u64(rec + 24, (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec);
    memcpy(rec + 32, boot_id, 16);
    if (text_payload) fill_text_payload(rec + PAYLOAD_OFFSET, seq);
    else fill_payload(rec + PAYLOAD_OFFSET, seq);
    put_u32(rec + CRC_OFFSET, crc32_ieee(rec, CRC_OFFSET));

    off_t off = (off_t)((seq - 1) * RECORD_SIZE);
    ssize_t w;
    do w = pwrite(fd, rec, RECORD_SIZE, off); while (w < 0 && errno == EINTR);
    if (w != (ssize_t)RECORD_SIZE) {
      say("mamori-wl error write seq=%llu: %s\n", (unsigned long long)seq, w < 0 ? strerror(errno) : "short write");
      return 1;
    }
    if (fdatasync(fd) != 0) {
      say("mamori-wl error fdatasync seq=%llu: %s\n", (unsigned long long)seq, strerror(errno));
      return 1;
    }
    last = seq;
    written++;
    say("mamori-wl ack %llu\n", (unsigned long long)seq);
    if (seq_file) write_seq_file(seq_file, last);
    if (max_count && written >= max_count) break;

    if (period_ns) {
      timespec_add_ns(&next, period_ns);
      struct timespec mono;
      clock_gettime(CLOCK_MONOTONIC, &mono);
      /* After a stall (TCG hiccup, slow flush), restart the schedule rather
       * than bursting to catch up: the rate is a ceiling, not a quota. */
      if (before(&next, &mono)) next = mono;
      while (!stop_requested && clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR) {
      }
    }
  }
  say("mamori-wl stopped last_seq=%llu\n", (unsigned long long)last);
  free(buf);
  return 0;
}
