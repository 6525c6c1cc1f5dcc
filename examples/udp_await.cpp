// The UDP await pattern: send a request, wait for the reply with a timeout, retry up to 3 times.
// Runs against a local echo pipe that ignores the first datagram, so the retry is visible.
#include <pipeworks/pipeworks.hpp>

#include <cstdio>
#include <functional>

using namespace pipeworks;
using namespace std::chrono_literals;

int main() {
    Loop loop;
    auto echo = Pipe::udp(loop, Address::loopback(Family::ipv4));
    if (!echo) return std::fprintf(stderr, "%s\n", echo.error().message.c_str()), 1;
    int seen = 0;
    (*echo)->on_message([&](Pipe& p, const Message& m) {
        if (++seen == 1) return;  // lose the first request
        p.send_to(m.data, m.from);
    });

    auto client = Pipe::udp(loop, {}, (*echo)->local_address());
    if (!client) return std::fprintf(stderr, "%s\n", client.error().message.c_str()), 1;
    PipePtr c = *client;
    int result = 1;
    std::function<void(int)> attempt = [&](int n) {
        std::printf("attempt %d: send \"hello\"\n", n);
        c->send("hello");
        c->recv(all_messages, 200ms, [&, n](Pipe&, RecvResult& r) {
            if (r) {
                std::printf("reply \"%s\" from %s\n", r.message.data.c_str(),
                            r.message.from.to_string().c_str());
                result = 0;
            } else if (n < 3) {
                std::printf("no reply within 200 ms\n");
                attempt(n + 1);
                return;
            } else {
                std::printf("no reply after 3 attempts\n");
            }
            c->close();
            (*echo)->close();
        });
    };
    attempt(1);
    loop.run();
    return result;
}
