// echo_server [--udp] [--bind HOST:PORT] [--framing raw|length]
// Echoes every message back to its sender. --framing length: messages are 4-byte big-endian
// length-prefixed frames (Framer::message()), echoed as frames; raw (the default) echoes what
// each read (or datagram) brings. Prints "listening on HOST:PORT" first (the real port
// when 0 was asked) and exits 0 on SIGINT/SIGTERM after closing cleanly.
#include <pipeworks/pipeworks.hpp>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>

using namespace pipeworks;

static int usage(const char* why) {
    std::fprintf(stderr,
                 "echo_server: %s\n"
                 "usage: echo_server [--udp] [--bind HOST:PORT] [--framing raw|length]\n",
                 why);
    return 2;
}

int main(int argc, char** argv) {
    bool udp = false;
    std::string bind = "127.0.0.1:0";
    Framer framer;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--udp")
            udp = true;
        else if (a == "--bind" && i + 1 < argc)
            bind = argv[++i];
        else if (a == "--framing" && i + 1 < argc) {
            std::string f = argv[++i];
            if (f == "length")
                framer = Framer::message();
            else if (f != "raw")
                return usage(("--framing: expected raw or length, got " + f).c_str());
        } else if (a == "--help" || a == "-h")
            return usage("echoes every message to its sender"), 0;
        else
            return usage(("unknown argument: " + a).c_str());
    }
    auto addr = Address::parse(bind);
    if (!addr) return usage(addr.error().message.c_str());

    Loop loop;
    NetConf conf;
    conf.reuse_addr = true;
    conf.framer = framer;
    auto opened = udp ? Pipe::udp(loop, *addr, {}, conf) : Pipe::listen(loop, *addr, conf);
    if (!opened) {
        std::fprintf(stderr, "echo_server: %s\n", opened.error().message.c_str());
        return 1;
    }
    PipePtr server = *opened;
    if (udp) {
        server->on_message([](Pipe& p, const Message& m) { p.send_to(m.data, m.from); });
    } else {
        // Copied to every accepted pipe: each echoes to its own peer.
        server->on_message([](Pipe& p, const Message& m) { p.send(m.data); });
    }
    // Handlers first: whoever reads the line below may signal at once.
    auto stop = [&](int) { server->close(); };
    auto s1 = loop.on_signal(SIGINT, stop);
    auto s2 = loop.on_signal(SIGTERM, stop);
    std::printf("listening on %s\n", server->local_address().to_string().c_str());
    std::fflush(stdout);
    loop.run();
    return 0;
}
