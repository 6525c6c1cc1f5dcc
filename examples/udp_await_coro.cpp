// The UDP await pattern of examples/udp_await, in the await style (pipeworks/await.hpp): one
// co_await sends the request and waits for the reply with a timeout, sending it again when
// none comes, up to NetConf::send_retry times (2 here: three attempts). Runs against a local
// echo pipe that loses the first request, so the retry is visible. Prints what udp_await does.
#include <pipeworks/pipeworks.hpp>

#include <cstdio>

#include "version_flag.hpp"

using namespace pipeworks;
using namespace std::chrono_literals;

namespace {

Task<int> ask(Loop& loop) {
    auto echo = co_await co::udp(loop, Address::loopback(Family::ipv4));
    if (!echo) {
        std::fprintf(stderr, "%s\n", echo.error().message.c_str());
        co_return 1;
    }
    int seen = 0;
    (*echo)->on_message([&seen](Pipe& p, const Message& m) {
        if (++seen == 1) {
            std::printf("echo: request %d lost\n", seen);
            return;
        }
        std::printf("echo: request %d answered\n", seen);
        (void)p.send_to(m.data, m.from);  // a refused reply: the client asks again
    });

    NetConf conf;
    conf.send_retry = 2;
    auto client = co_await co::udp(loop, {}, (*echo)->local_address(), conf);
    if (!client) {
        std::fprintf(stderr, "%s\n", client.error().message.c_str());
        co_return 1;
    }
    std::printf("send \"hello\", waiting 200 ms for each reply, %d resends at most\n",
                conf.send_retry);
    RecvResult r = co_await co::send_recv(*client, "hello", all_messages, 200ms);
    int result = 1;
    if (r) {
        std::printf("reply \"%s\" from %s after %llu requests\n", r.message.data.c_str(),
                    r.message.from.to_string().c_str(),
                    static_cast<unsigned long long>((*client)->stats().msgs_out));
        result = 0;
    } else if (r.status == RecvResult::Status::timeout) {
        std::printf("no reply after %d attempts\n", conf.send_retry + 1);
    } else {
        std::printf("ended: %s %s\n", to_string(r.end.reason), r.end.error.message.c_str());
    }
    (void)co_await co::close(*client);
    (void)co_await co::close(*echo);
    co_return result;
}

}  // namespace

int main(int argc, char** argv) {
    if (print_version(argc, argv)) return 0;
    Loop loop;
    int result = 1;
    spawn(loop, ask(loop), [&](TaskOutcome<int>& o) { result = o.get(); });
    loop.run();
    return result;
}
