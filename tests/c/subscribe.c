/* A lossless subscriber: receives COUNT frames of uint32 elements, each element k of frame n
 * holding n * 1000 + k, and checks every one (number, contents, no misses). Prints "ready"
 * once subscribed and "ok frames=COUNT missed=0" at the end. */
#include "check.h"

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: subscribe SOCKET NAME COUNT\n"); return 2; }
    unsigned long long count = strtoull(argv[3], NULL, 10);
    mms_client *c;
    CHECK(mms_connect(argv[1], &c));
    mms_subscriber *s;
    CHECK(mms_subscribe(c, argv[2], true, 2, &s));
    printf("ready\n");
    fflush(stdout);
    for (unsigned long long n = 0; n < count; n++) {
        mms_sample *sample;
        CHECK(mms_receive(s, 30000, &sample));
        const uint32_t *frame = mms_sample_data(sample);
        size_t elems = mms_sample_len(sample) / sizeof(uint32_t);
        if (mms_sample_number(sample) != n || mms_sample_missed_before(sample) != 0) {
            fprintf(stderr, "frame %llu came as number %llu, missed_before %llu\n", n,
                    (unsigned long long)mms_sample_number(sample),
                    (unsigned long long)mms_sample_missed_before(sample));
            return 1;
        }
        for (size_t k = 0; k < elems; k++) {
            if (frame[k] != (uint32_t)(n * 1000 + k)) {
                fprintf(stderr, "frame %llu element %zu is %u\n", n, k, frame[k]);
                return 1;
            }
        }
        mms_sample_release(sample);
    }
    uint64_t missed;
    CHECK(mms_subscriber_missed(s, &missed));
    printf("ok frames=%llu missed=%llu\n", count, (unsigned long long)missed);
    mms_subscriber_free(s);
    mms_client_free(c);
    return missed == 0 ? 0 : 1;
}
