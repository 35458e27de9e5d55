/* LD_PRELOAD shim for the clock-jump test: shifts the wall clock (CLOCK_REALTIME and
 * what reads it: gettimeofday, time) of a process by an offset that another process can
 * change at any moment, as NTP stepping the clock of a board without a real-time clock
 * does. The monotonic clocks are left alone, as the kernel leaves them.
 *
 * The offset is a little-endian int64 of nanoseconds at the start of the file named by
 * $EA_CLOCK_OFFSET_FILE, mapped shared, so a write to the file takes effect at once.
 * Build: cc -shared -fPIC -O2 -o clockshift.so clockshift.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int64_t *volatile offset_ns;
static int (*real_clock_gettime)(clockid_t, struct timespec *);

static int64_t offset(void) {
    int64_t *p = offset_ns;
    if (p == NULL) {
        const char *path = getenv("EA_CLOCK_OFFSET_FILE");
        int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
        if (fd < 0)
            return 0;
        void *m = mmap(NULL, sizeof(int64_t), PROT_READ, MAP_SHARED, fd, 0);
        close(fd);
        if (m == MAP_FAILED)
            return 0;
        offset_ns = p = m;
    }
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

int clock_gettime(clockid_t clk, struct timespec *ts) {
    if (real_clock_gettime == NULL)
        real_clock_gettime = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    int rc = real_clock_gettime(clk, ts);
    if (rc == 0 && (clk == CLOCK_REALTIME || clk == CLOCK_REALTIME_COARSE)) {
        int64_t ns = (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec + offset();
        ts->tv_sec = (time_t)(ns / 1000000000);
        ts->tv_nsec = (long)(ns % 1000000000);
        if (ts->tv_nsec < 0) {
            ts->tv_nsec += 1000000000;
            ts->tv_sec -= 1;
        }
    }
    return rc;
}

int gettimeofday(struct timeval *tv, void *tz) {
    (void)tz;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (tv != NULL) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return 0;
}

time_t time(time_t *t) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (t != NULL)
        *t = ts.tv_sec;
    return ts.tv_sec;
}
