// adopt() in a few lines: a listening socket made elsewhere (here with the plain socket API,
// as a service manager such as systemd would pass one in) becomes a pipeworks server.
// Prints "adopted a server on HOST:PORT", then the line a client sent through it: "echo: hi".
#include "version_flag.hpp"

#include <pipeworks/pipeworks.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>

using namespace pipeworks;
using namespace std::chrono_literals;

// A TCP socket listening on 127.0.0.1, a port from the OS; -1 on failure.
int listening_socket() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0 ||
        ::listen(fd, 16) != 0) {
        std::perror("socket");
        if (fd >= 0) ::close(fd);
        return -1;
    }
    return fd;
}

int main(int argc, char** argv) {
    if (print_version(argc, argv)) return 0;
    const int fd = listening_socket();
    if (fd < 0) return 1;
    Loop loop;
    NetConf conf;
    conf.framer = Framer::lines();
    auto server = Pipe::adopt(loop, fd, conf);  // the pipe owns fd from now on
    if (!server)
        return ::close(fd), std::fprintf(stderr, "%s\n", server.error().message.c_str()), 1;
    std::printf("adopted a server on %s\n", (*server)->local_address().to_string().c_str());
    (*server)->on_message([](Pipe& p, const Message& m) { (void)p.send(m.data); });

    auto client = Pipe::connect(loop, (*server)->local_address(), conf).value();
    int status = 1;
    client->on_message([&](Pipe& c, const Message& m) {
        std::printf("echo: %.*s\n", static_cast<int>(m.data.size()), m.data.data());
        status = 0;
        c.close();
        (*server)->close();
    });
    (void)client->send("hi");
    Timer deadline = loop.call_later(5s, [&] {
        client->close();
        (*server)->close();
    });
    loop.run_until([&] { return client->ended() && (*server)->ended(); }, 6s);
    deadline.cancel();
    return status;
}
