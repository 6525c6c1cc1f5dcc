// Each framer in a few lines: a TCP sender writes three messages with a framer, and a receiver
// with the same framer gets them back as three messages, however the bytes were split on the
// way. Prints one line per framer: its name, then each message received, in brackets.
#include "version_flag.hpp"

#include <pipeworks/pipeworks.hpp>

#include <cstdio>
#include <string>
#include <vector>

using namespace pipeworks;
using namespace std::chrono_literals;

// Sends `messages` from a client to a server, both framed by `framer`; what the server got.
std::vector<std::string> round_trip(Loop& loop, const Framer& framer,
                                    const std::vector<std::string>& messages) {
    NetConf conf;
    conf.framer = framer;
    std::vector<std::string> got;
    auto server = Pipe::listen(loop, Address::loopback(Family::ipv4), conf).value();
    server->on_message([&](Pipe&, const Message& m) { got.emplace_back(m.data); });
    auto client = Pipe::connect(loop, server->local_address(), conf).value();
    for (const auto& m : messages)
        if (framer.kind == FramerKind::json_header)
            (void)client->send_json(m, "text/plain", "utf-8");  // a JSON header, then m
        else
            (void)client->send(m);
    loop.run_until([&] { return got.size() == messages.size(); }, 2s);
    client->close();
    server->close();
    loop.run();
    return got;
}

int main(int argc, char** argv) {
    if (print_version(argc, argv)) return 0;
    Loop loop;
    const std::vector<std::pair<const char*, Framer>> framers = {
        {"length_prefixed(4)", Framer::message()},  // 4-byte big-endian length, then the bytes
        {"lines", Framer::lines()},                 // each message ends with "\n"
        {"delimited(\"\\r\\n\")", Framer::delimited("\r\n")},
        {"fixed(5)", Framer::fixed(5)},  // every message is exactly 5 bytes
        {"json_header", Framer::json_header()},
    };
    int status = 0;
    for (const auto& [name, framer] : framers) {
        auto got = round_trip(loop, framer, {"alpha", "bravo", "delta"});
        std::printf("%s:", name);
        for (const auto& m : got) std::printf(" [%s]", m.c_str());
        std::printf("\n");
        if (got.size() != 3) status = 1;
    }
    return status;
}
