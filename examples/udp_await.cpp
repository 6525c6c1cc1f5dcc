// The UDP await pattern: send a request, wait for the reply with a timeout, and send it again
// when none comes, up to NetConf::send_retry times (2 here: three attempts), with
// Pipe::send_recv. Runs against a local echo pipe that loses the first request, so the retry
// is visible.
#include "version_flag.hpp"

#include <pipeworks/pipeworks.hpp>

#include <cstdio>

using namespace pipeworks;
using namespace std::chrono_literals;

int main(int argc, char** argv) {
    if (print_version(argc, argv)) return 0;
    Loop loop;
    auto echo = Pipe::udp(loop, Address::loopback(Family::ipv4));
    if (!echo) return std::fprintf(stderr, "%s\n", echo.error().message.c_str()), 1;
    int seen = 0;
    (*echo)->on_message([&](Pipe& p, const Message& m) {
        if (++seen == 1) {
            std::printf("echo: request %d lost\n", seen);
            return;
        }
        std::printf("echo: request %d answered\n", seen);
        (void)p.send_to(m.data, m.from);  // a refused reply: the client asks again
    });

    NetConf conf;
    conf.send_retry = 2;
    auto client = Pipe::udp(loop, {}, (*echo)->local_address(), conf);
    if (!client) return std::fprintf(stderr, "%s\n", client.error().message.c_str()), 1;
    int result = 1;
    std::printf("send \"hello\", waiting 200 ms for each reply, %d resends at most\n",
                conf.send_retry);
    Error e = (*client)->send_recv("hello", all_messages, 200ms, [&](Pipe& c, RecvResult& r) {
        if (r) {
            std::printf("reply \"%s\" from %s after %llu requests\n", r.message.data.c_str(),
                        r.message.from.to_string().c_str(),
                        static_cast<unsigned long long>(c.stats().msgs_out));
            result = 0;
        } else if (r.status == RecvResult::Status::timeout) {
            std::printf("no reply after %d attempts\n", conf.send_retry + 1);
        } else {
            std::printf("ended: %s %s\n", to_string(r.end.reason), r.end.error.message.c_str());
        }
        c.close();
        (*echo)->close();
    });
    if (e) return std::fprintf(stderr, "%s\n", e.message.c_str()), 1;
    loop.run();
    return result;
}
