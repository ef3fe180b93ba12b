/* Request/response from C: creates service "calc.c" (requests and responses of 4 uint32),
 * serves it and calls it from one process: COUNT requests, each answered with every element
 * doubled plus the request's id, checked; a second server is MMS_ERR_BUSY; a request of the
 * wrong length MMS_ERR_INVALID_ARGUMENT. Prints "ok calls=COUNT". */
#include "check.h"

#define COUNT 300

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: service SOCKET\n"); return 2; }
    mms_client *c;
    CHECK(mms_connect(argv[1], &c));
    const uint64_t shape[1] = {4};
    mms_service_options *o;
    CHECK(mms_service_options_new("calc.c", "<u4", 1, shape, "<u4", 1, shape, &o));
    CHECK(mms_service_options_set(o, MMS_SERVICE_MAX_SERVERS, 1));
    CHECK(mms_service_options_set(o, MMS_SERVICE_MAX_REQUESTERS, 2));
    CHECK(mms_service_options_set(o, MMS_SERVICE_FLAGS, MMS_CREATE_MEMORY));
    CHECK(mms_create_service(c, o));
    mms_service_options_free(o);
    mms_server *server;
    CHECK(mms_server_open(c, "calc.c", &server));
    mms_server *second;
    EXPECT(mms_server_open(c, "calc.c", &second), MMS_ERR_BUSY);
    mms_requester *r;
    CHECK(mms_requester_open(c, "calc.c", &r));
    uint32_t bad[3] = {0};
    EXPECT(mms_requester_send(r, bad, sizeof bad, 1000, NULL), MMS_ERR_INVALID_ARGUMENT);
    for (uint32_t n = 0; n < COUNT; n++) {
        uint32_t request[4] = {n, n + 1, n + 2, n + 3};
        uint64_t id;
        CHECK(mms_requester_send(r, request, sizeof request, 10000, &id));
        mms_request *req;
        CHECK(mms_server_receive(server, 10000, &req));
        const uint32_t *in = mms_request_data(req);
        if (mms_request_len(req) != sizeof request || mms_request_id(req) != id
            || mms_request_requester(req) != 0) {
            fprintf(stderr, "request %u: len %zu id %llu\n", n, mms_request_len(req),
                    (unsigned long long)mms_request_id(req));
            return 1;
        }
        uint32_t answer[4];
        for (int k = 0; k < 4; k++) answer[k] = in[k] * 2 + (uint32_t)id;
        CHECK(mms_request_respond(server, req, answer, sizeof answer));
        mms_request_release(req);
        mms_response *resp;
        CHECK(mms_requester_receive(r, 10000, &resp));
        const uint32_t *got = mms_response_data(resp);
        if (mms_response_id(resp) != id || mms_response_len(resp) != sizeof answer) {
            fprintf(stderr, "response %u: id %llu\n", n, (unsigned long long)mms_response_id(resp));
            return 1;
        }
        for (int k = 0; k < 4; k++) {
            if (got[k] != request[k] * 2 + n) {
                fprintf(stderr, "response %u element %d is %u\n", n, k, got[k]);
                return 1;
            }
        }
        mms_response_release(resp);
    }
    mms_response *none;
    EXPECT(mms_requester_receive(r, 50, &none), MMS_ERR_TIMEOUT);
    printf("ok calls=%d\n", COUNT);
    mms_requester_free(r);
    mms_server_free(server);
    CHECK(mms_delete_service(c, "calc.c"));
    mms_client_free(c);
    return 0;
}
