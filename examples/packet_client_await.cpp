// packet_client_await HOST:PORT [--channel C] [--count N] [--size BYTES] [--window W]
// examples/packet_client in the await style (pipeworks/await.hpp): W tasks share the N
// requests, each awaiting one response at a time (`co_await co::request(...)`), so at most W
// are outstanding. Types, payloads, checks, output and exit status are packet_client's: it
// prints "N passed, N failed" and exits 0 only if every request passed and the shutdown (ERQ,
// EOF, the server's EOF) was orderly.
#include <pipeworks/pipeworks.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

using namespace pipeworks;

static int usage(const char* why) {
    std::fprintf(stderr,
                 "packet_client_await: %s\n"
                 "usage: packet_client_await HOST:PORT [--channel C] [--count N] [--size BYTES] "
                 "[--window W]\n",
                 why);
    return 2;
}

static bool number(const char* s, std::uint64_t& out) {
    char* end = nullptr;
    out = std::strtoull(s, &end, 10);
    return end != s && *end == '\0' && s[0] != '-';
}

namespace {

struct Client {
    PacketConnectionPtr conn;
    std::uint64_t channel = 0, count = 100, size = 200, window = 32;
    std::uint64_t next = 0, passed = 0, failed = 0, workers = 0;
    bool broken = false;  // a request failed with an error: the connection is gone
    Error end_error;

    // The payload of request i: a pattern derived from its number.
    std::string payload(std::uint64_t i) const {
        std::string p(size, '\0');
        for (std::uint64_t k = 0; k < size; ++k) p[k] = static_cast<char>('a' + (i + k) % 26);
        return p;
    }

    bool good(std::uint64_t i, std::uint64_t type, std::uint64_t flags,
              const PacketResult& r) const {
        switch (type) {
            case 0:
                return r.ok && r.flags == 0 && r.payload == payload(i);
            case 1:
                return r.ok && r.flags == size && r.payload.empty();
            case 3:
                return r.ok && r.flags == flags && r.payload == payload(i);
            default:
                return !r.ok && r.flags == 0;  // 2 and 4 fail
        }
    }
};

// Takes the next request number until none is left, and checks each response.
Task<void> worker(Client& c) {
    while (c.next < c.count && !c.broken) {
        const std::uint64_t i = c.next++;
        const std::uint64_t type = i % 5;
        const std::uint64_t flags = type == 3 ? i * 7 + 1 : 0;
        const std::string body = c.payload(i);
        PacketResult r = co_await co::request(c.conn, type, body, flags, c.channel);
        if (r.error) {
            if (!c.broken)  // the connection's end fails the rest with the same error
                std::fprintf(stderr, "request %llu: %s\n", static_cast<unsigned long long>(i),
                             r.error.message.c_str());
            c.broken = true;
            ++c.failed;
            break;
        }
        if (c.good(i, type, flags, r)) {
            ++c.passed;
        } else {
            ++c.failed;
            std::fprintf(stderr, "request %llu (type %llu): unexpected %s, flags %llu\n",
                         static_cast<unsigned long long>(i), static_cast<unsigned long long>(type),
                         r.ok ? "success" : "failure", static_cast<unsigned long long>(r.flags));
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    Client client;
    std::string target;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        std::uint64_t* field = nullptr;
        if (a == "--channel")
            field = &client.channel;
        else if (a == "--count")
            field = &client.count;
        else if (a == "--size")
            field = &client.size;
        else if (a == "--window")
            field = &client.window;
        else if (a == "--help" || a == "-h")
            return usage("submits requests to a packet server and checks the responses"), 0;
        else if (target.empty() && a[0] != '-')
            target = a;
        else
            return usage(("unknown argument: " + a).c_str());
        if (field != nullptr && (i + 1 >= argc || !number(argv[++i], *field)))
            return usage((a + ": expected a number").c_str());
    }
    if (target.empty()) return usage("HOST:PORT missing");
    if (client.window == 0) return usage("--window: must be at least 1");

    Loop loop;
    // Connects on first use; "host:port" names are resolved by the loop's resolver.
    auto conn =
        PacketConnection::on_demand(loop, [target](Loop& l) { return Pipe::connect(l, target); });
    if (!conn) {
        std::fprintf(stderr, "packet_client_await: %s\n", conn.error().message.c_str());
        return 1;
    }
    client.conn = *conn;
    client.conn->on_end([&](PacketConnection&, const Error& e) { client.end_error = e; });
    // The last worker to finish shuts the connection down in order.
    const std::uint64_t workers = std::min(client.window, std::max<std::uint64_t>(client.count, 1));
    client.workers = workers;
    for (std::uint64_t w = 0; w < workers; ++w) {
        spawn(loop, worker(client), [&](Outcome<void>& o) {
            o.get();
            if (--client.workers == 0) client.conn->close();
        });
    }
    loop.run();
    if (client.end_error)
        std::fprintf(stderr, "packet_client_await: %s\n", client.end_error.message.c_str());
    // Requests never submitted (the connection failed first) count as failed.
    client.failed = client.count - client.passed;
    std::printf("%llu passed, %llu failed\n", static_cast<unsigned long long>(client.passed),
                static_cast<unsigned long long>(client.failed));
    return client.failed == 0 && !client.end_error ? 0 : 1;
}
