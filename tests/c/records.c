/* Records from C: create an array of a record dtype by its descr, see its itemsize in
 * mms_info ("|V16") and its fields from mms_array_descr and mms_stat_descr (a short buffer
 * cut and NUL-terminated, the full length reported), write records as a C struct with the
 * same layout, and print 'ok' for the Python side to read them with NumPy.
 * Usage: records SOCKET NAME */
#include <stdint.h>
#include "check.h"

struct point {
    float x;
    uint32_t pad; /* the descr's unnamed '|V4' */
    uint64_t id;
};

#define DESCR "[('x', '<f4'), ('', '|V4'), ('id', '<u8')]"

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    mms_client *c = NULL;
    CHECK(mms_connect(argv[1], &c));
    uint64_t shape[1] = {3};
    mms_array *a = NULL;
    /* Any spelling NumPy would accept; the daemon names it canonically. */
    CHECK(mms_create_array(c, argv[2], "[('x','f4'),('','V4'),('id','u8')]", 1, shape, 0, 0, &a));
    mms_info info;
    CHECK(mms_array_info(a, &info));
    if (strcmp(info.dtype, "|V16") != 0 || info.data_len != 3 * sizeof(struct point)) {
        fprintf(stderr, "info: dtype %s data_len %llu\n", info.dtype,
                (unsigned long long)info.data_len);
        return 1;
    }
    char descr[256];
    size_t len = 0;
    CHECK(mms_array_descr(a, descr, sizeof descr, &len));
    if (strcmp(descr, DESCR) != 0 || len != strlen(DESCR)) {
        fprintf(stderr, "descr %s (%zu)\n", descr, len);
        return 1;
    }
    char small[8];
    CHECK(mms_stat_descr(c, argv[2], small, sizeof small, &len));
    if (strcmp(small, "[('x', ") != 0 || len != strlen(DESCR)) {
        fprintf(stderr, "short descr %s (%zu)\n", small, len);
        return 1;
    }
    CHECK(mms_stat_descr(c, argv[2], NULL, 0, &len));
    if (len != strlen(DESCR)) return 1;
    struct point p[3];
    memset(p, 0, sizeof p);
    for (int i = 0; i < 3; i++) {
        p[i].x = 0.5f + (float)i;
        p[i].id = 1000u + (uint64_t)i;
    }
    CHECK(mms_array_write(a, p, sizeof p, NULL));
    printf("ok\n");
    mms_array_free(a);
    mms_client_free(c);
    return 0;
}
