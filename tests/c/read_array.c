/* Reads a float64 array written by another program, then waits for its next version and
 * reads that: prints "version=V sum=S first=F last=L" for each. */
#include "check.h"

static void read_and_print(mms_array *a, size_t n, double *buf) {
    uint64_t version;
    CHECK(mms_array_read(a, buf, n * sizeof(double), &version));
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += buf[i];
    printf("version=%llu sum=%.1f first=%.1f last=%.1f\n", (unsigned long long)version, sum,
           buf[0], buf[n - 1]);
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: read_array SOCKET NAME\n"); return 2; }
    mms_client *c;
    CHECK(mms_connect(argv[1], &c));
    mms_info info;
    CHECK(mms_stat(c, argv[2], &info));
    if (info.kind != MMS_KIND_ARRAY || strcmp(info.dtype, "<f8") != 0) {
        fprintf(stderr, "unexpected kind %d dtype %s\n", info.kind, info.dtype);
        return 1;
    }
    size_t n = 1;
    printf("shape=");
    for (uint32_t d = 0; d < info.ndim; d++) {
        n *= info.shape[d];
        printf(d ? "x%llu" : "%llu", (unsigned long long)info.shape[d]);
    }
    printf(" order=%c\n", info.order);
    mms_array *a;
    CHECK(mms_open_array(c, argv[2], "<f8", false, &a));
    double *buf = malloc(n * sizeof(double));
    read_and_print(a, n, buf);
    uint64_t seen;
    CHECK(mms_array_info(a, &info));
    seen = info.version;
    printf("waiting\n");
    fflush(stdout);
    uint64_t now;
    CHECK(mms_array_wait(a, seen, 30000, &now));
    read_and_print(a, n, buf);
    free(buf);
    mms_array_free(a);
    mms_client_free(c);
    return 0;
}
