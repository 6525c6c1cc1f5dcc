// Subscriptions and recv() in a few lines: a UDP pipe sorts what it receives into queues by a
// byte pattern, and the program takes messages out of each queue with a timeout.
// Prints the message each recv() got, in order, then "nothing in 100 ms" for the empty queue.
#include "version_flag.hpp"

#include <pipeworks/pipeworks.hpp>

#include <cstdio>
#include <string>

using namespace pipeworks;
using namespace std::chrono_literals;

int main(int argc, char** argv) {
    if (print_version(argc, argv)) return 0;
    Loop loop;
    auto pipe = Pipe::udp(loop, Address::loopback(Family::ipv4)).value();
    // Queues fill as messages arrive, before anyone waits; a message goes to every queue whose
    // pattern it matches.
    SubId temps = pipe->subscribe(Pattern::prefix("temp:"));
    SubId alarms = pipe->subscribe(Pattern::contains("ALARM"));
    SubId logs = pipe->subscribe(Pattern::prefix("log:"));
    for (const char* text : {"temp: 21.5", "log: started", "temp: 80.1 ALARM", "temp: 22.0"})
        (void)pipe->send_to(text, pipe->local_address());

    // The next message of `sub` within `timeout`; then `next` (recv waits on the loop).
    auto take = [&](const char* queue, SubId sub, auto timeout, auto next) {
        pipe->recv(sub, timeout, [=](Pipe&, RecvResult& r) {
            if (r)
                std::printf("[%s] %s\n", queue, r.message.data.c_str());
            else
                std::printf("[%s] nothing in 100 ms\n", queue);
            next();
        });
    };
    take("temp", temps, 1s, [&] {
        take("temp", temps, 1s, [&] {
            take("temp", temps, 1s, [&] {
                take("alarm", alarms, 1s, [&] {
                    take("log", logs, 1s,
                         [&] { take("log", logs, 100ms, [&] { pipe->close(); }); });
                });
            });
        });
    });
    loop.run();
    return 0;
}
