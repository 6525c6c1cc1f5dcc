// A tour of pipes: a TCP echo and a UDP echo on loopback, with each pipe's stats.
#include "version_flag.hpp"

#include <pipeworks/pipeworks.hpp>

#include <cstdio>
#include <string>

using namespace pipeworks;
using namespace std::chrono_literals;

static void print_stats(const char* name, const Pipe& p) {
    PipeStats s = p.stats();
    std::printf("  %-14s %-28s in %6llu B / %3llu msgs   out %6llu B / %3llu msgs\n", name,
                p.local_address().to_string().c_str(), static_cast<unsigned long long>(s.bytes_in),
                static_cast<unsigned long long>(s.msgs_in),
                static_cast<unsigned long long>(s.bytes_out),
                static_cast<unsigned long long>(s.msgs_out));
}

int main(int argc, char** argv) {
    if (print_version(argc, argv)) return 0;
    Loop loop;
    constexpr int kMessages = 100;

    // TCP: a server whose accepted pipes echo, and a client counting replies.
    auto server = Pipe::listen(loop, Address::loopback(Family::ipv4));
    if (!server) return std::fprintf(stderr, "%s\n", server.error().message.c_str()), 1;
    (*server)->on_message([](Pipe& p, const Message& m) { (void)p.send(m.data); });
    PipePtr accepted;
    (*server)->on_accept([&](Pipe&, const PipePtr& c) { accepted = c; });
    auto tcp = Pipe::connect(loop, (*server)->local_address());
    if (!tcp) return std::fprintf(stderr, "%s\n", tcp.error().message.c_str()), 1;
    std::size_t tcp_echoed = 0;
    (*tcp)->on_up([](Pipe& p) {
        std::printf("tcp: connected %s -> %s\n", p.local_address().to_string().c_str(),
                    p.peer_address().to_string().c_str());
        for (int i = 0; i < kMessages; ++i)
            (void)p.send("hello over tcp #" + std::to_string(i) + "\n");
    });
    (*tcp)->on_message([&](Pipe&, const Message& m) { tcp_echoed += m.data.size(); });

    // UDP: an echo pipe replying to each sender, and a client with a default destination.
    auto uecho = Pipe::udp(loop, Address::loopback(Family::ipv6));
    if (!uecho) return std::fprintf(stderr, "%s\n", uecho.error().message.c_str()), 1;
    (*uecho)->on_message([](Pipe& p, const Message& m) { (void)p.send_to(m.data, m.from); });
    auto udp = Pipe::udp(loop, {}, (*uecho)->local_address());
    if (!udp) return std::fprintf(stderr, "%s\n", udp.error().message.c_str()), 1;
    int udp_replies = 0;
    (*udp)->on_message([&](Pipe&, const Message&) { ++udp_replies; });
    for (int i = 0; i < kMessages; ++i) (void)(*udp)->send("hello over udp #" + std::to_string(i));

    std::size_t tcp_expected = 0;
    for (int i = 0; i < kMessages; ++i)
        tcp_expected += ("hello over tcp #" + std::to_string(i) + "\n").size();
    bool ok =
        loop.run_until([&] { return tcp_echoed == tcp_expected && udp_replies == kMessages; }, 5s);

    std::printf("tcp: %zu of %zu bytes echoed\n", tcp_echoed, tcp_expected);
    std::printf("udp: %d of %d datagrams echoed over IPv6\n", udp_replies, kMessages);
    std::printf("stats:\n");
    print_stats("tcp client", **tcp);
    if (accepted) print_stats("tcp accepted", *accepted);
    print_stats("udp client", **udp);
    print_stats("udp echo", **uecho);

    for (auto* p : {&*tcp, &*server, &*udp, &*uecho}) (*p)->close();
    loop.run_until([&] { return (*tcp)->ended() && (*server)->ended(); }, 2s);
    std::printf(ok ? "demo ok\n" : "demo FAILED\n");
    return ok ? 0 : 1;
}
