/* Creates an int32 3x4 array, writes 0..11 from a buffer (durably), then 100..111 in place; prints
 * both versions. */
#include "check.h"

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: write_array SOCKET NAME\n"); return 2; }
    mms_client *c;
    CHECK(mms_connect(argv[1], &c));
    uint64_t shape[2] = {3, 4};
    mms_array *a;
    CHECK(mms_create_array(c, argv[2], "<i4", 2, shape, MMS_CREATE_MEMORY, 0644, &a));
    int32_t values[12];
    for (int i = 0; i < 12; i++) values[i] = i;
    uint64_t v1, v2;
    CHECK(mms_array_write_durable(a, values, sizeof values, &v1));
    void *data;
    size_t len;
    CHECK(mms_array_begin_write(a, &data, &len));
    if (len != sizeof values) { fprintf(stderr, "len %zu\n", len); return 1; }
    int32_t *in_place = data;
    for (int i = 0; i < 12; i++) in_place[i] = 100 + i;
    CHECK(mms_array_commit(a, &v2));
    printf("versions %llu %llu\n", (unsigned long long)v1, (unsigned long long)v2);
    mms_array_free(a);
    mms_client_free(c);
    return 0;
}
