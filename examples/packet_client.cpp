// packet_client HOST:PORT [--channel C] [--count N] [--size BYTES] [--window W]
// Submits N requests (default 100) to a server of the packet protocol (examples/packet_server,
// or any peer with the same handlers), cycling through the types: 0 echo, 1 flags = payload
// length, 2 fails, 3 echoes flags and payload, 4 (no handler) fails. Payloads are BYTES long
// (default 200), on channel C (default 0), at most W (default 32) outstanding. A failure is
// recognised by its ok flag and flags, whatever its reason text. Then it shuts down in order
// (ERQ, EOF, waits for the server's EOF), prints "N passed, N failed" and exits 0 only if every
// request passed and the shutdown was orderly.
#include "version_flag.hpp"
#include "packet_requests.hpp"

#include <pipeworks/pipeworks.hpp>

#include <cstdio>
#include <string>

using namespace pipeworks;

namespace {

struct Client {
    PacketRequests rq;
    PacketConnectionPtr conn;
    std::uint64_t next = 0, passed = 0, failed = 0;
    bool done = false;
    Error end_error;

    void submit_more() {
        while (next < rq.count && conn->stats().outstanding < rq.window) {
            const std::uint64_t i = next++;
            conn->submit(PacketRequests::type(i), PacketRequests::flags(i), rq.payload(i),
                         rq.channel, [this, i](PacketResult& r) { check(i, r); });
        }
        if (next == rq.count && conn->stats().outstanding == 0) conn->close();
    }

    void check(std::uint64_t i, const PacketResult& r) {
        bool good = false;
        if (r.error) {
            if (failed == 0)  // the connection's end fails the rest with the same error
                std::fprintf(stderr, "request %llu: %s\n", static_cast<unsigned long long>(i),
                             r.error.message.c_str());
        } else {
            good = rq.check(i, r);
        }
        ++(good ? passed : failed);
        // A failed connection fails the rest at once: no more submits then.
        if (!r.error) submit_more();
    }
};

}  // namespace

int main(int argc, char** argv) {
    if (print_version(argc, argv)) return 0;
    Client client;
    if (int rc = client.rq.parse("packet_client", argc, argv); rc >= 0) return rc;

    Loop loop;
    // Connects on first use; "host:port" names are resolved off the loop thread.
    auto conn = PacketConnection::on_demand(
        loop, [target = client.rq.target](Loop& l) { return Pipe::connect(l, target); });
    if (!conn) {
        std::fprintf(stderr, "packet_client: %s\n", conn.error().message.c_str());
        return 1;
    }
    client.conn = *conn;
    client.conn->on_end([&](PacketConnection&, const Error& e) {
        client.done = true;
        client.end_error = e;
    });
    client.submit_more();
    loop.run();
    if (client.end_error)
        std::fprintf(stderr, "packet_client: %s\n", client.end_error.message.c_str());
    // Requests never submitted (the connection failed first) count as failed.
    client.failed += client.rq.count - client.passed - client.failed;
    std::printf("%llu passed, %llu failed\n", static_cast<unsigned long long>(client.passed),
                static_cast<unsigned long long>(client.failed));
    return client.failed == 0 && !client.end_error ? 0 : 1;
}
