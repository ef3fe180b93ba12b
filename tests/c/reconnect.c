/* One client object across a daemon restart: creates array "state" (held for writing) and
 * stream "frames", subscribes losslessly and publishes 10 frames; prints "ready" and waits for
 * a line on stdin (the test restarts the daemon meanwhile); then the same client's next
 * request succeeds, the writer writes, and frames 10..49 arrive in order. Prints "done". */
#include "check.h"

static void pass(mms_publisher *p, mms_subscriber *s, uint64_t n) {
    uint64_t frame[4] = {n, n, n, n};
    uint64_t number = 0;
    CHECK(mms_publisher_send(p, frame, sizeof frame, 10000, &number));
    mms_sample *sample = NULL;
    CHECK(mms_receive(s, 10000, &sample));
    if (mms_sample_number(sample) != n || ((const uint64_t *)mms_sample_data(sample))[0] != n) {
        fprintf(stderr, "frame %llu is wrong\n", (unsigned long long)n);
        exit(1);
    }
    mms_sample_release(sample);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: reconnect SOCKET\n");
        return 2;
    }
    mms_client *c = NULL;
    CHECK(mms_connect(argv[1], &c));
    uint64_t one = 1, four = 4;
    mms_array *state = NULL;
    CHECK(mms_create_array(c, "state", "<u8", 1, &one, MMS_CREATE_MEMORY, 0, &state));
    CHECK(mms_create_stream(c, "frames", "<u8", 1, &four, 4, 4, MMS_CREATE_MEMORY, 0));
    mms_publisher *p = NULL;
    CHECK(mms_publisher_open(c, "frames", &p));
    mms_subscriber *s = NULL;
    CHECK(mms_subscribe(c, "frames", true, 1, &s));
    for (uint64_t n = 0; n < 10; n++) pass(p, s, n);
    printf("ready\n");
    fflush(stdout);
    char line[16];
    if (fgets(line, sizeof line, stdin) == NULL) return 1;
    mms_info info;
    CHECK(mms_stat(c, "state", &info));
    uint64_t seven = 7, version = 0;
    CHECK(mms_array_write(state, &seven, sizeof seven, &version));
    for (uint64_t n = 10; n < 50; n++) pass(p, s, n);
    printf("done\n");
    mms_subscriber_free(s);
    mms_publisher_free(p);
    mms_array_free(state);
    mms_client_free(c);
    return 0;
}
