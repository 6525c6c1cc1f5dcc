// packet_client HOST:PORT [--channel C] [--count N] [--size BYTES] [--window W]
// Submits N requests (default 100) to a server of the packet protocol (examples/packet_server,
// or any peer with the same handlers), cycling through the types: 0 echo, 1 flags = payload
// length, 2 fails, 3 echoes flags and payload, 4 (no handler) fails. Payloads are BYTES long
// (default 200), on channel C (default 0), at most W (default 32) outstanding. A failure is
// recognised by its ok flag and flags, whatever its reason text. Then it shuts down in order
// (ERQ, EOF, waits for the server's EOF), prints "N passed, N failed" and exits 0 only if every
// request passed and the shutdown was orderly.
#include "version_flag.hpp"

#include <pipeworks/pipeworks.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>

using namespace pipeworks;

static int usage(const char* why) {
    std::fprintf(stderr,
                 "packet_client: %s\n"
                 "usage: packet_client HOST:PORT [--channel C] [--count N] [--size BYTES] "
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
    std::uint64_t next = 0, passed = 0, failed = 0;
    bool done = false;
    Error end_error;

    // The payload of request i: its number, then a pattern derived from it.
    std::string payload(std::uint64_t i) const {
        std::string p(size, '\0');
        for (std::uint64_t k = 0; k < size; ++k) p[k] = static_cast<char>('a' + (i + k) % 26);
        return p;
    }

    void submit_more() {
        while (next < count && conn->stats().outstanding < window) {
            const std::uint64_t i = next++;
            const std::uint64_t type = i % 5;
            const std::uint64_t flags = type == 3 ? i * 7 + 1 : 0;
            conn->submit(type, flags, payload(i), channel,
                         [this, i, type, flags](PacketResult& r) { check(i, type, flags, r); });
        }
        if (next == count && conn->stats().outstanding == 0) conn->close();
    }

    void check(std::uint64_t i, std::uint64_t type, std::uint64_t flags, const PacketResult& r) {
        bool good = false;
        if (r.error) {
            if (failed == 0)  // the connection's end fails the rest with the same error
                std::fprintf(stderr, "request %llu: %s\n", static_cast<unsigned long long>(i),
                             r.error.message.c_str());
        } else {
            switch (type) {
                case 0:
                    good = r.ok && r.flags == 0 && r.payload == payload(i);
                    break;
                case 1:
                    good = r.ok && r.flags == size && r.payload.empty();
                    break;
                case 3:
                    good = r.ok && r.flags == flags && r.payload == payload(i);
                    break;
                default:
                    good = !r.ok && r.flags == 0;
                    break;  // 2 and 4 fail
            }
            if (!good)
                std::fprintf(stderr, "request %llu (type %llu): unexpected %s, flags %llu\n",
                             static_cast<unsigned long long>(i),
                             static_cast<unsigned long long>(type), r.ok ? "success" : "failure",
                             static_cast<unsigned long long>(r.flags));
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
    // Connects on first use; "host:port" names are resolved off the loop thread.
    auto conn =
        PacketConnection::on_demand(loop, [target](Loop& l) { return Pipe::connect(l, target); });
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
    client.failed += client.count - client.passed - client.failed;
    std::printf("%llu passed, %llu failed\n", static_cast<unsigned long long>(client.passed),
                static_cast<unsigned long long>(client.failed));
    return client.failed == 0 && !client.end_error ? 0 : 1;
}
