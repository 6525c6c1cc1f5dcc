// packet_client_await HOST:PORT [--channel C] [--count N] [--size BYTES] [--window W]
// examples/packet_client in the await style (pipeworks/await.hpp): W tasks share the N
// requests, each awaiting one response at a time (`co_await co::request(...)`), so at most W
// are outstanding. Types, payloads, checks, output and exit status are packet_client's: it
// prints "N passed, N failed" and exits 0 only if every request passed and the shutdown (ERQ,
// EOF, the server's EOF) was orderly.
#include "packet_requests.hpp"
#include "version_flag.hpp"

#include <pipeworks/pipeworks.hpp>

#include <algorithm>
#include <cstdio>
#include <string>

using namespace pipeworks;

namespace {

struct Client {
    PacketRequests rq;
    PacketConnectionPtr conn;
    std::uint64_t next = 0, passed = 0, workers = 0;
    bool broken = false;  // a request failed with an error: the connection is gone
    Error end_error;
};

// Takes the next request number until none is left, and checks each response.
Task<void> worker(Client& c) {
    while (c.next < c.rq.count && !c.broken) {
        const std::uint64_t i = c.next++;
        const std::string body = c.rq.payload(i);
        PacketResult r = co_await co::request(c.conn, PacketRequests::type(i), body,
                                              PacketRequests::flags(i), c.rq.channel);
        if (r.error) {
            if (!c.broken)  // the connection's end fails the rest with the same error
                std::fprintf(stderr, "request %llu: %s\n", static_cast<unsigned long long>(i),
                             r.error.message.c_str());
            c.broken = true;
        } else if (c.rq.check(i, r)) {
            ++c.passed;
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (print_version(argc, argv)) return 0;
    Client client;
    if (int rc = client.rq.parse("packet_client_await", argc, argv); rc >= 0) return rc;

    Loop loop;
    // Connects on first use; "host:port" names are resolved by the loop's resolver.
    auto conn = PacketConnection::on_demand(
        loop, [target = client.rq.target](Loop& l) { return Pipe::connect(l, target); });
    if (!conn) {
        std::fprintf(stderr, "packet_client_await: %s\n", conn.error().message.c_str());
        return 1;
    }
    client.conn = *conn;
    client.conn->on_end([&](PacketConnection&, const Error& e) { client.end_error = e; });
    // The last worker to finish shuts the connection down in order.
    client.workers = std::min(client.rq.window, std::max<std::uint64_t>(client.rq.count, 1));
    for (std::uint64_t w = 0, n = client.workers; w < n; ++w) {
        spawn(loop, worker(client), [&](TaskOutcome<void>& o) {
            o.get();
            if (--client.workers == 0) client.conn->close();
        });
    }
    loop.run();
    if (client.end_error)
        std::fprintf(stderr, "packet_client_await: %s\n", client.end_error.message.c_str());
    // Every request not passed failed (also those never submitted: the connection failed).
    const std::uint64_t failed = client.rq.count - client.passed;
    std::printf("%llu passed, %llu failed\n", static_cast<unsigned long long>(client.passed),
                static_cast<unsigned long long>(failed));
    return failed == 0 && !client.end_error ? 0 : 1;
}
