/* LD_PRELOAD shim for the chaos suite: the wall clock (CLOCK_REALTIME, gettimeofday,
 * time) of one process runs CRONHIVE_SKEW_S seconds ahead; monotonic clocks, sleeps
 * and timed waits stay real. (libfaketime 0.9.10 also shifts the deadlines of
 * Python 3.11's timed lock waits, which then hang, or breaks time.sleep when told
 * to leave the monotonic clock alone.) Built by the test with the system's cc. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static long skew_s(void) {
    static long cached = -1;
    if (cached == -1) {
        const char *text = getenv("CRONHIVE_SKEW_S");
        cached = text ? atol(text) : 0;
    }
    return cached;
}

int clock_gettime(clockid_t id, struct timespec *tp) {
    static int (*real)(clockid_t, struct timespec *) = 0;
    if (!real) real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    int result = real(id, tp);
    if (result == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) tp->tv_sec += skew_s();
    return result;
}

int gettimeofday(struct timeval *tv, void *tz) {
    static int (*real)(struct timeval *, void *) = 0;
    if (!real) real = (int (*)(struct timeval *, void *))dlsym(RTLD_NEXT, "gettimeofday");
    int result = real(tv, tz);
    if (result == 0 && tv) tv->tv_sec += skew_s();
    return result;
}

time_t time(time_t *out) {
    struct timeval tv;
    gettimeofday(&tv, 0);
    if (out) *out = tv.tv_sec;
    return tv.tv_sec;
}
