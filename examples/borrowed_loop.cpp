// A borrowed libuv loop in a few lines: an application that already runs its own uv_loop_t
// (with handles of its own) puts pipeworks on it; the application runs the loop and closes it.
// Prints "libuv timer fired", "pipeworks got: ping" (in either order), then "loop closed".
#include "version_flag.hpp"

#include <uv.h>
#include <pipeworks/pipeworks.hpp>

#include <cstdio>

using namespace pipeworks;

int main(int argc, char** argv) {
    if (print_version(argc, argv)) return 0;
    uv_loop_t uv;
    if (uv_loop_init(&uv) != 0) return 1;
    int status = 1;
    {
        Loop loop(&uv);  // borrows uv: pipeworks handles run on it, next to the application's
        auto pipe = Pipe::udp(loop, Address::loopback(Family::ipv4)).value();
        pipe->on_message([&](Pipe& p, const Message& m) {
            std::printf("pipeworks got: %.*s\n", static_cast<int>(m.data.size()), m.data.data());
            status = 0;
            p.close();
        });
        (void)pipe->send_to("ping", pipe->local_address());

        uv_timer_t timer;  // the application's own libuv handle
        uv_timer_init(&uv, &timer);
        uv_timer_start(
            &timer,
            [](uv_timer_t* t) {
                std::printf("libuv timer fired\n");
                uv_close(reinterpret_cast<uv_handle_t*>(t), nullptr);
            },
            10, 0);
        uv_run(&uv, UV_RUN_DEFAULT);  // until the timer and the pipe are closed
    }                                 // the Loop goes first; the uv_loop_t stays the application's
    const bool closed = uv_loop_close(&uv) == 0;
    std::printf("loop %s\n", closed ? "closed" : "still busy");
    return closed ? status : 1;
}
