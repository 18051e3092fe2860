/*
 * Runs inside an arm64 Linux guest booted with zvisor's device tree
 * (qemu-tests/tests/aarch64_fdt.rs): reports what the kernel made of the
 * tree, as ZVISOR-RESULT lines the host parses. Built static with
 * aarch64-linux-gnu-gcc; no libc beyond stdio/POSIX.
 *
 * Usage: fdt-check TAG EXPECTED-DISK-MARKER
 * Exit status 0 when the virtio disk and rng were found and worked.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *tag;

/* Reads a small file into buf (NUL-terminated, trailing newline cut);
 * returns the byte count or -1. */
static int slurp(const char *path, char *buf, size_t len) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, len - 1);
  close(fd);
  if (n < 0) return -1;
  buf[n] = 0;
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == 0)) buf[--n] = 0;
  return (int)n;
}

/* Replaces spaces and control bytes so a value stays one word. */
static void word(char *s) {
  for (; *s; s++)
    if (*s <= ' ' || *s > '~') *s = '_';
}

static void result(const char *key, const char *value) {
  char v[512];
  snprintf(v, sizeof v, "%s", value);
  word(v);
  printf("ZVISOR-RESULT tag=%s %s=%s\n", tag, key, v);
  fflush(stdout);
}

static void result_file(const char *key, const char *path) {
  char buf[512];
  if (slurp(path, buf, sizeof buf) < 0) snprintf(buf, sizeof buf, "missing");
  result(key, buf);
}

static int wait_for(const char *path, int tenths) {
  for (int i = 0; i < tenths; i++) {
    if (access(path, F_OK) == 0) return 1;
    usleep(100000);
  }
  return 0;
}

static int cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The virtio_mmio nodes of the live device tree, sorted. */
static void dt_virtio_nodes(void) {
  DIR *d = opendir("/proc/device-tree");
  char *names[64];
  int n = 0;
  char list[1024] = "";
  if (!d) {
    result("dt_virtio", "no-device-tree");
    return;
  }
  struct dirent *e;
  while ((e = readdir(d)) && n < 64)
    if (!strncmp(e->d_name, "virtio_mmio@", 12)) names[n++] = strdup(e->d_name + 12);
  closedir(d);
  qsort(names, n, sizeof *names, cmp);
  for (int i = 0; i < n; i++) {
    if (i) strncat(list, ",", sizeof list - strlen(list) - 1);
    strncat(list, names[i], sizeof list - strlen(list) - 1);
  }
  result("dt_virtio", n ? list : "none");
}

/* Each virtio device: its ID and the platform device (= DT node) it sits on. */
static void virtio_devices(void) {
  DIR *d = opendir("/sys/bus/virtio/devices");
  if (!d) {
    result("virtio", "no-virtio-bus");
    return;
  }
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char p[320], link[512], id[64], line[900];
    snprintf(p, sizeof p, "/sys/bus/virtio/devices/%s", e->d_name);
    ssize_t n = readlink(p, link, sizeof link - 1);
    link[n > 0 ? n : 0] = 0;
    /* ../../../devices/platform/a000000.virtio_mmio/virtio0 */
    char *end = strrchr(link, '/');
    if (end) *end = 0;
    char *transport = strrchr(link, '/');
    snprintf(p, sizeof p, "/sys/bus/virtio/devices/%s/device", e->d_name);
    if (slurp(p, id, sizeof id) < 0) snprintf(id, sizeof id, "?");
    snprintf(line, sizeof line, "%s:%s:%s", e->d_name, id, transport ? transport + 1 : "?");
    result("virtio_dev", line);
  }
  closedir(d);
}

/* /proc/interrupts lines of virtio devices: controller, hwirq, trigger,
 * count summed over CPUs. */
static void virtio_interrupts(void) {
  FILE *f = fopen("/proc/interrupts", "r");
  char line[512];
  if (!f) return;
  while (fgets(line, sizeof line, f)) {
    if (!strstr(line, "virtio")) continue;
    char *tok[40];
    int n = 0;
    for (char *t = strtok(line, " \t\n"); t && n < 40; t = strtok(NULL, " \t\n")) tok[n++] = t;
    if (n < 5) continue;
    unsigned long count = 0;
    int i = 1;
    for (; i < n && strspn(tok[i], "0123456789") == strlen(tok[i]); i++) count += strtoul(tok[i], 0, 10);
    /* tok[i] = controller, then hwirq, trigger, name (the name may be
     * followed by nothing else on 6.1). */
    if (i + 3 > n) continue;
    char v[256];
    snprintf(v, sizeof v, "%s:%s:%s:%s:%lu", tok[n - 1], tok[i], tok[i + 1], tok[i + 2], count);
    result("virtio_irq", v);
  }
  fclose(f);
}

static int disk(const char *marker) {
  if (!wait_for("/dev/vda", 100)) {
    result("disk", "no-dev-vda");
    return 1;
  }
  result_file("disk_sectors", "/sys/block/vda/size");
  int fd = open("/dev/vda", O_RDONLY);
  char buf[512];
  if (fd < 0 || pread(fd, buf, sizeof buf, 512) != (ssize_t)sizeof buf) {
    result("disk", "read-failed");
    return 1;
  }
  close(fd);
  buf[sizeof buf - 1] = 0;
  char *nl = strchr(buf, '\n');
  if (nl) *nl = 0;
  result("disk_sector1", buf);
  return strcmp(buf, marker) != 0;
}

static int rng(void) {
  if (!wait_for("/dev/hwrng", 100)) {
    result("rng", "no-dev-hwrng");
    return 1;
  }
  result_file("rng_current", "/sys/class/misc/hw_random/rng_current");
  unsigned char a[64], b[64];
  int fd = open("/dev/hwrng", O_RDONLY);
  if (fd < 0) {
    result("rng", "open-failed");
    return 1;
  }
  ssize_t na = read(fd, a, sizeof a), nb = read(fd, b, sizeof b);
  close(fd);
  char v[64];
  snprintf(v, sizeof v, "%zd", na);
  result("rng_bytes", v);
  result("rng_differs", na == nb && na > 0 && memcmp(a, b, na) ? "yes" : "no");
  return na != (ssize_t)sizeof a;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: fdt-check TAG DISK-MARKER\n");
    return 2;
  }
  tag = argv[1];
  result_file("dt_model", "/proc/device-tree/model");
  result_file("dt_psci_method", "/proc/device-tree/psci/method");
  result_file("cpus_online", "/sys/devices/system/cpu/online");
  result_file("cmdline", "/proc/cmdline");
  result_file("console", "/proc/consoles");
  result_file("rtc", "/sys/class/rtc/rtc0/name");
  dt_virtio_nodes();
  int bad = disk(argv[2]);
  bad |= rng();
  virtio_devices();
  virtio_interrupts();
  result("fdt_check", bad ? "fail" : "ok");
  return bad;
}
