// await_echo [--bind HOST:PORT]                   a coroutine TCP echo server
// await_echo --connect HOST:PORT [MESSAGE...]     a coroutine TCP echo client
// P2PD's echo example in the await style (pipeworks/await.hpp): one Task per accepted client
// echoes what it receives until the peer finishes. The server takes echo_server's --bind
// (default 127.0.0.1:0), prints the same "listening on HOST:PORT" first line, and exits 0 on
// SIGINT/SIGTERM after closing cleanly, so bench/run.sh drives both the same way. A client
// silent for 60 s is closed, as echo_server's default --idle-timeout does.
// The client sends each MESSAGE (default "hello"), prints each echo as "echo: TEXT", shuts its
// side down, and exits 0 once every echo came back and the server closed in order.
#include "stop_signals.hpp"
#include "version_flag.hpp"

#include <pipeworks/pipeworks.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

using namespace pipeworks;
using namespace std::chrono_literals;

namespace {

constexpr const char* kUsage =
    "usage: await_echo [--bind HOST:PORT]\n"
    "       await_echo --connect HOST:PORT [MESSAGE...]\n"
    "  --bind HOST:PORT     serve: where to listen (default 127.0.0.1:0, a port of the OS's)\n"
    "  --connect HOST:PORT  be a client: send each MESSAGE (default \"hello\"), print the echo\n";

int usage(const std::string& why) {
    std::fprintf(stderr, "await_echo: %s\n%s", why.c_str(), kUsage);
    return 2;
}

// One accepted client: echo until it finishes, fails or stays silent for a minute.
Task<void> serve_client(PipePtr client) {
    for (;;) {
        RecvResult r = co_await co::recv(client, 60s);
        if (!r) break;  // timeout (idle), finished (FIN) or ended
        if (co_await co::send(client, r.message.data)) break;
    }
    (void)co_await co::close(client);  // what was echoed still goes out first
}

Task<void> serve(Loop& loop, PipePtr server) {
    for (;;) {
        AcceptResult a = co_await co::accept(server, 24h);
        if (a.status == RecvResult::Status::timeout) continue;
        if (!a) break;  // the server ended (a signal closed it)
        spawn(loop, serve_client(a.pipe));
    }
}

Task<int> client(Loop& loop, std::string target, std::vector<std::string> messages) {
    auto opened = co_await co::connect(loop, target);
    if (!opened) {
        std::fprintf(stderr, "await_echo: %s\n", opened.error().message.c_str());
        co_return 1;
    }
    PipePtr pipe = *opened;
    for (const std::string& m : messages) {
        if (Error e = co_await co::send(pipe, m)) {
            std::fprintf(stderr, "await_echo: %s\n", e.message.c_str());
            co_return 1;
        }
        std::string echo;
        while (echo.size() < m.size()) {
            RecvResult r = co_await co::recv(pipe, 5s);
            if (!r) {
                std::fprintf(
                    stderr, "await_echo: no echo of \"%s\": %s\n", m.c_str(),
                    r.status == RecvResult::Status::timeout ? "timeout" : to_string(r.end.reason));
                co_return 1;
            }
            echo += r.message.data;
        }
        std::printf("echo: %s\n", echo.c_str());
    }
    Error e = co_await co::deadline(co::shutdown(pipe), 5s);
    if (e) {
        std::fprintf(stderr, "await_echo: %s\n", e.message.c_str());
        co_return 1;
    }
    co_return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (print_version(argc, argv)) return 0;
    std::string bind = "127.0.0.1:0", target;
    std::vector<std::string> messages;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const bool has_value = i + 1 < argc;
        if (a == "--bind" && has_value) {
            bind = argv[++i];
        } else if (a == "--connect" && has_value) {
            target = argv[++i];
        } else if (a == "--help" || a == "-h") {
            std::printf("await_echo: a coroutine echo server and client\n%s", kUsage);
            return 0;
        } else if (!target.empty() && !a.starts_with("--")) {
            messages.push_back(a);
        } else {
            return usage("unknown argument: " + a);
        }
    }

    if (!target.empty()) {
        if (messages.empty()) messages.push_back("hello");
        int rc = 1;
        Loop loop;
        spawn(loop, client(loop, target, messages), [&](TaskOutcome<int>& o) { rc = o.get(); });
        loop.run();
        return rc;
    }

    auto addr = Address::parse(bind);
    if (!addr) return usage(addr.error().message);
    {
        Loop loop;
        NetConf conf;
        conf.reuse_addr = true;
        auto server = Pipe::listen(loop, *addr, conf);
        if (!server) {
            std::fprintf(stderr, "await_echo: %s\n", server.error().message.c_str());
            return 1;
        }
        spawn(loop, serve(loop, *server));
        auto stop = [&](int) { (*server)->close(); };
        auto s1 = loop.on_signal(SIGINT, stop);
        auto s2 = loop.on_signal(SIGTERM, stop);
        std::printf("listening on %s\n", (*server)->local_address().to_string().c_str());
        std::fflush(stdout);
        loop.run();
        hold_stop_signals();
    }
    ignore_stop_signals();
    return 0;
}
