// Loop::post() in a few lines: the one thread-safe way into a loop. A worker thread computes
// results and posts each to the loop thread, which sends it out on a pipe; pipes themselves
// are used on their loop's thread only.
// Prints "result N = SQUARE (sent on the loop thread)" for N = 1..3 as the datagrams arrive.
#include "version_flag.hpp"

#include <pipeworks/pipeworks.hpp>

#include <cstdio>
#include <string>
#include <thread>

using namespace pipeworks;
using namespace std::chrono_literals;

int main(int argc, char** argv) {
    if (print_version(argc, argv)) return 0;
    Loop loop;
    const std::thread::id loop_thread = std::this_thread::get_id();
    auto pipe = Pipe::udp(loop, Address::loopback(Family::ipv4)).value();
    const Address self = pipe->local_address();
    int received = 0;
    pipe->on_message([&](Pipe& p, const Message& m) {
        std::printf("%.*s\n", static_cast<int>(m.data.size()), m.data.data());
        if (++received == 3) p.close();
    });

    std::thread worker([&] {
        for (int n = 1; n <= 3; ++n) {
            const std::string result =
                "result " + std::to_string(n) + " = " + std::to_string(n * n);
            loop.post([&, result] {  // runs on the loop thread, in the order posted
                const bool on_loop = std::this_thread::get_id() == loop_thread;
                (void)pipe->send_to(
                    result + (on_loop ? " (sent on the loop thread)" : " (WRONG THREAD)"), self);
            });
        }
    });
    const bool done = loop.run_until([&] { return received == 3; }, 5s);
    worker.join();
    loop.run_until([&] { return pipe->ended(); }, 1s);
    return done ? 0 : 1;
}
