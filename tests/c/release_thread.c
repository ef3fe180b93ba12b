/* A sample released by another thread while this thread waits in mms_receive: the release
 * must not wait for the receive. Thread B releases the sample this thread holds, then
 * publishes frame 1; this thread, asleep in mms_receive, must get frame 1 well within its
 * timeout. (Were the release to wait for the receive, frame 1 would come only after the
 * receive had timed out.) Prints "ok". */
#include <pthread.h>
#include <unistd.h>
#include "check.h"

static mms_publisher *pub;
static mms_sample *held;

static void *other_thread(void *arg) {
    (void)arg;
    usleep(50 * 1000); /* let the main thread fall asleep in mms_receive */
    mms_sample_release(held);
    uint32_t frame[4] = {1, 1, 1, 1};
    CHECK(mms_publisher_send(pub, frame, sizeof frame, 1000, NULL));
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: release_thread SOCKET\n"); return 2; }
    mms_client *c;
    CHECK(mms_connect(argv[1], &c));
    uint64_t shape[1] = {4};
    CHECK(mms_create_stream(c, "threads", "<u4", 1, shape, 8, 0, MMS_CREATE_MEMORY, 0));
    CHECK(mms_publisher_open(c, "threads", &pub));
    mms_subscriber *s;
    CHECK(mms_subscribe(c, "threads", true, 2, &s));
    uint32_t frame[4] = {0, 0, 0, 0};
    CHECK(mms_publisher_send(pub, frame, sizeof frame, 1000, NULL));
    CHECK(mms_receive(s, 1000, &held));
    pthread_t t;
    if (pthread_create(&t, NULL, other_thread, NULL) != 0) return 1;
    mms_sample *next;
    CHECK(mms_receive(s, 4000, &next));
    if (mms_sample_number(next) != 1) { fprintf(stderr, "got frame %llu\n", (unsigned long long)mms_sample_number(next)); return 1; }
    pthread_join(t, NULL);
    mms_sample_release(next);
    mms_subscriber_free(s);
    mms_publisher_free(pub);
    mms_client_free(c);
    printf("ok\n");
    return 0;
}
