/*
 * mock_cluster: a Kafka-protocol mock cluster for tests and the demo.
 *
 * Apache Kafka itself cannot run here, so we start librdkafka's built-in mock
 * cluster (rdkafka_mock.h, experimental API, librdkafka 2.0.2) and expose its
 * fault-injection calls as a line protocol on stdin/stdout. The Node helper
 * src/embedded/mock-cluster.ts drives it.
 *
 *   mock_cluster [--brokers N] [--topic NAME:PARTITIONS[:REPLICATION]]...
 *
 * stdout: exactly one "BOOTSTRAP host:port,..." line once ready, then one
 * "OK" or "ERR <reason>" line per command read from stdin:
 *   down <id> | up <id> | rtt <id> <ms>       broker ids start at 1; -1 = all
 *   errors <api_key> <code> [<code> ...]       next requests of that API fail
 *   topic <name> <partitions> [<replication>]  mock has no CreateTopics API
 *   ping | quit
 * Exits 0 on quit, stdin EOF (so it never outlives its parent) and
 * SIGTERM/SIGINT. Set BIONER_MOCK_DEBUG=1 for librdkafka's mock debug log.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define MAX_ERRORS 64

static rd_kafka_mock_cluster_t *mcluster;
static int broker_cnt = 3;

/* Parses a whole decimal int in [min, max]; returns 0 on success. */
static int parse_int(const char *s, long min, long max, int *out) {
        char *end;
        long v;
        if (!s || !*s)
                return -1;
        errno = 0;
        v     = strtol(s, &end, 10);
        if (errno || *end || v < min || v > max)
                return -1;
        *out = (int)v;
        return 0;
}

static void reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void reply(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        putchar('\n');
        fflush(stdout); /* the parent waits for each line */
}

static void reply_err(rd_kafka_resp_err_t err) {
        if (err)
                reply("ERR %s", rd_kafka_err2str(err));
        else
                reply("OK");
}

/* Replication is capped at the broker count: the mock would otherwise list
 * replicas on brokers that do not exist. */
static rd_kafka_resp_err_t create_topic(const char *name, int parts, int repl) {
        if (repl > broker_cnt)
                repl = broker_cnt;
        return rd_kafka_mock_topic_create(mcluster, name, parts, repl);
}

/* Parses NAME:PARTITIONS[:REPLICATION] (from --topic). */
static int topic_arg(char *spec) {
        char *p1 = strchr(spec, ':'), *p2;
        int parts, repl = 3;
        if (!p1 || p1 == spec)
                return -1;
        *p1++ = '\0';
        if ((p2 = strchr(p1, ':'))) {
                *p2++ = '\0';
                if (parse_int(p2, 1, 1000, &repl))
                        return -1;
        }
        if (parse_int(p1, 1, 100000, &parts))
                return -1;
        if (create_topic(spec, parts, repl)) {
                fprintf(stderr, "mock_cluster: cannot create topic %s\n", spec);
                return -1;
        }
        return 0;
}

static int broker_id(const char *s, int *id) {
        if (s && !strcmp(s, "-1")) {
                *id = -1; /* all brokers */
                return 0;
        }
        return parse_int(s, 1, broker_cnt, id);
}

/* Executes one command line; returns 1 when the process should exit. */
static int command(char *line) {
        char *argv[MAX_ERRORS + 3], *save = NULL, *tok;
        int argc = 0, id, v;

        for (tok = strtok_r(line, " \t\r", &save); tok && argc < (int)(sizeof(argv) / sizeof(*argv));
             tok = strtok_r(NULL, " \t\r", &save))
                argv[argc++] = tok;
        if (tok) {
                reply("ERR too many arguments");
                return 0;
        }
        if (argc == 0) {
                reply("ERR empty command");
                return 0;
        }

        if (!strcmp(argv[0], "ping") && argc == 1) {
                reply("OK");
        } else if (!strcmp(argv[0], "quit") && argc == 1) {
                reply("OK");
                return 1;
        } else if ((!strcmp(argv[0], "down") || !strcmp(argv[0], "up")) && argc == 2) {
                if (broker_id(argv[1], &id))
                        reply("ERR broker id must be 1..%d or -1", broker_cnt);
                else
                        reply_err(argv[0][0] == 'd' ? rd_kafka_mock_broker_set_down(mcluster, id)
                                                    : rd_kafka_mock_broker_set_up(mcluster, id));
        } else if (!strcmp(argv[0], "rtt") && argc == 3) {
                if (broker_id(argv[1], &id))
                        reply("ERR broker id must be 1..%d or -1", broker_cnt);
                else if (parse_int(argv[2], 0, INT_MAX, &v))
                        reply("ERR rtt must be a non-negative number of ms");
                else
                        reply_err(rd_kafka_mock_broker_set_rtt(mcluster, id, v));
        } else if (!strcmp(argv[0], "errors") && argc >= 3) {
                rd_kafka_resp_err_t errs[MAX_ERRORS];
                int api_key, i, code;
                if (parse_int(argv[1], 0, SHRT_MAX, &api_key)) {
                        reply("ERR bad api key");
                        return 0;
                }
                for (i = 2; i < argc; i++) {
                        /* negative codes are librdkafka-internal, e.g. -195
                         * (__TRANSPORT) makes the broker drop the connection */
                        if (parse_int(argv[i], -200, 1000, &code)) {
                                reply("ERR bad error code %s", argv[i]);
                                return 0;
                        }
                        errs[i - 2] = (rd_kafka_resp_err_t)code;
                }
                rd_kafka_mock_push_request_errors_array(mcluster, (int16_t)api_key, (size_t)(argc - 2),
                                                        errs);
                reply("OK");
        } else if (!strcmp(argv[0], "topic") && (argc == 3 || argc == 4)) {
                int parts, repl = 3;
                if (parse_int(argv[2], 1, 100000, &parts) || (argc == 4 && parse_int(argv[3], 1, 1000, &repl)))
                        reply("ERR usage: topic <name> <partitions> [<replication>]");
                else
                        reply_err(create_topic(argv[1], parts, repl));
        } else {
                reply("ERR unknown command or wrong arguments: %s", argv[0]);
        }
        return 0;
}

int main(int argc, char **argv) {
        char errstr[512], buf[4096];
        size_t used = 0;
        int i, sfd, done = 0;
        sigset_t sigs;
        rd_kafka_conf_t *conf;
        rd_kafka_t *rk;
        const char *dbg = getenv("BIONER_MOCK_DEBUG");

        /* Block SIGTERM/SIGINT before librdkafka starts its threads (they
         * inherit the mask) and take them through a signalfd instead, so the
         * main loop sees them in poll() and shuts down in order. */
        sigemptyset(&sigs);
        sigaddset(&sigs, SIGTERM);
        sigaddset(&sigs, SIGINT);
        sigprocmask(SIG_BLOCK, &sigs, NULL);
        sfd = signalfd(-1, &sigs, SFD_CLOEXEC);
        signal(SIGPIPE, SIG_IGN); /* a vanished parent must not kill us mid-write */

        /* The mock cluster needs an rd_kafka_t for bookkeeping only. */
        conf = rd_kafka_conf_new();
        if (dbg && !strcmp(dbg, "1"))
                rd_kafka_conf_set(conf, "debug", "mock", errstr, sizeof(errstr));
        else /* hide the notice that this handle has no bootstrap.servers */
                rd_kafka_conf_set(conf, "log_level", "4", errstr, sizeof(errstr));
        rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
        if (!rk) {
                fprintf(stderr, "mock_cluster: rd_kafka_new: %s\n", errstr);
                return 1;
        }

        for (i = 1; i < argc; i++) {
                if (!strcmp(argv[i], "--brokers") && i + 1 < argc) {
                        if (parse_int(argv[++i], 1, 64, &broker_cnt)) {
                                fprintf(stderr, "mock_cluster: --brokers must be 1..64\n");
                                return 2;
                        }
                }
        }
        mcluster = rd_kafka_mock_cluster_new(rk, broker_cnt);
        if (!mcluster) {
                fprintf(stderr, "mock_cluster: rd_kafka_mock_cluster_new failed\n");
                return 1;
        }
        /* Second pass: topics need the cluster. */
        for (i = 1; i < argc; i++) {
                if (!strcmp(argv[i], "--brokers")) {
                        i++;
                } else if (!strcmp(argv[i], "--topic") && i + 1 < argc) {
                        if (topic_arg(argv[++i])) {
                                fprintf(stderr, "mock_cluster: bad --topic, want NAME:PARTITIONS[:REPLICATION]\n");
                                return 2;
                        }
                } else {
                        fprintf(stderr, "usage: mock_cluster [--brokers N] [--topic NAME:PARTS[:REPL]]...\n");
                        return 2;
                }
        }

        reply("BOOTSTRAP %s", rd_kafka_mock_cluster_bootstraps(mcluster));

        /* Read stdin with read(), not stdio: poll() cannot see stdio's buffer. */
        while (!done) {
                struct pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {sfd, POLLIN, 0}};
                ssize_t n;
                char *nl;

                if (poll(fds, sfd >= 0 ? 2 : 1, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                if (sfd >= 0 && fds[1].revents)
                        break; /* SIGTERM/SIGINT */
                if (!fds[0].revents)
                        continue;
                n = read(STDIN_FILENO, buf + used, sizeof(buf) - 1 - used);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break; /* EOF or error: parent is gone */
                used += (size_t)n;
                buf[used] = '\0';
                while (!done && (nl = memchr(buf, '\n', used))) {
                        size_t len = (size_t)(nl - buf) + 1;
                        *nl        = '\0';
                        done       = command(buf);
                        memmove(buf, buf + len, used - len);
                        used -= len;
                }
                if (used == sizeof(buf) - 1) {
                        reply("ERR line too long");
                        used = 0;
                }
        }

        rd_kafka_mock_cluster_destroy(mcluster);
        rd_kafka_destroy(rk);
        return 0;
}
