/*
 * A PostgreSQL server of the test's own (see harness.h): Debian's binaries found under
 * /usr/lib/postgresql, initdb and the postmaster run as children of the test (as nobody when
 * the test is root), the postmaster with PR_SET_PDEATHSIG so a test that dies takes its server
 * with it. Started and stopped by its PID; readiness is a PQping on its port.
 */
#include "harness_int.h"

#include "scopegate/crypto.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#define PG_ADMIN             "sg_admin"
#define PG_ROLE              "scopegate"
#define PG_INITDB_TIMEOUT_MS 120000
#define PG_START_TIMEOUT_MS  30000
#define PG_STOP_TIMEOUT_MS   30000
#define PG_LOG_TAIL          4000

/* The newest /usr/lib/postgresql/N/bin holding a postgres binary, into pg->bin. */
static int find_bin(th_pg_t *pg)
{
    glob_t g;
    int found = glob("/usr/lib/postgresql/*/bin/postgres", 0, NULL, &g) == 0 && g.gl_pathc > 0;
    if (!found) {
        fprintf(stderr, "harness: PostgreSQL's server binaries are not installed (no "
                        "/usr/lib/postgresql/*/bin/postgres): install the Debian package "
                        "postgresql (scripts/test does)\n");
        globfree(&g);
        return -1;
    }
    /* glob sorts; compare versions as numbers so 15 comes after 9.6 */
    const char *best = NULL;
    long best_v = -1;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        long v = strtol(g.gl_pathv[i] + strlen("/usr/lib/postgresql/"), NULL, 10);
        if (v > best_v) {
            best_v = v;
            best = g.gl_pathv[i];
        }
    }
    snprintf(pg->bin, sizeof pg->bin, "%.*s", (int)(strrchr(best, '/') - best), best);
    globfree(&g);
    return 0;
}

/* Who runs the server: nobody when we are root, else ourselves. */
static int find_user(th_pg_t *pg)
{
    pg->uid = geteuid();
    pg->gid = getegid();
    if (pg->uid != 0)
        return 0;
    struct passwd *pw = getpwnam("nobody");
    if (!pw) {
        fprintf(stderr, "harness: running as root and there is no user nobody to run "
                        "PostgreSQL as (it refuses root)\n");
        return -1;
    }
    pg->uid = pw->pw_uid;
    pg->gid = pw->pw_gid;
    return 0;
}

/* The folder: under $TMPDIR, or /tmp when nobody could not get through $TMPDIR. */
static int make_dir(th_pg_t *pg)
{
    const char *tmp = getenv("TMPDIR");
    struct stat sb;
    if (!tmp || !*tmp || (geteuid() == 0 && (stat(tmp, &sb) != 0 || !(sb.st_mode & S_IXOTH))))
        tmp = "/tmp";
    int n = snprintf(pg->dir, sizeof pg->dir, "%s/sg_pg_XXXXXX", tmp);
    if (n < 0 || (size_t)n >= sizeof pg->dir) {
        fprintf(stderr, "harness: TMPDIR too long\n");
        pg->dir[0] = '\0';
        return -1;
    }
    if (!mkdtemp(pg->dir)) {
        fprintf(stderr, "harness: mkdtemp %s: %s\n", pg->dir, strerror(errno));
        pg->dir[0] = '\0';
        return -1;
    }
    if (geteuid() == 0 && chown(pg->dir, pg->uid, pg->gid) != 0) {
        fprintf(stderr, "harness: chown %s: %s\n", pg->dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* The last bytes of the server's log, for a failure's message. */
static void print_log_tail(const th_pg_t *pg)
{
    size_t len = 0;
    char *log = th_read_file(pg->log_path, &len);
    if (!log)
        return;
    const char *from = len > PG_LOG_TAIL ? log + len - PG_LOG_TAIL : log;
    fprintf(stderr, "harness: the end of %s:\n%s\n", pg->log_path, from);
    free(log);
}

/*
 * Forks argv[0] as the server's user with stdout and stderr appended to the log; the child
 * dies with the test (SIGQUIT: PostgreSQL's immediate shutdown). The pid, or -1.
 */
static pid_t spawn(const th_pg_t *pg, char *const argv[])
{
    int logfd = open(pg->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (logfd < 0) {
        fprintf(stderr, "harness: cannot open %s: %s\n", pg->log_path, strerror(errno));
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("harness: fork");
        close(logfd);
        return -1;
    }
    if (pid == 0) {
        if (geteuid() == 0 &&
            (setgroups(0, NULL) != 0 || setgid(pg->gid) != 0 || setuid(pg->uid) != 0)) {
            dprintf(logfd, "harness: cannot become uid %d: %s\n", (int)pg->uid, strerror(errno));
            _exit(126);
        }
        /* After setuid, which clears it. */
        prctl(PR_SET_PDEATHSIG, SIGQUIT);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull < 0 || dup2(devnull, STDIN_FILENO) < 0 || dup2(logfd, STDOUT_FILENO) < 0 ||
            dup2(logfd, STDERR_FILENO) < 0)
            _exit(126);
        execv(argv[0], argv);
        dprintf(STDERR_FILENO, "harness: exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(logfd);
    return pid;
}

/* Runs argv to its end within timeout_ms; 0 when it exited 0. */
static int run_tool(const th_pg_t *pg, char *const argv[], int timeout_ms)
{
    pid_t pid = spawn(pg, argv);
    if (pid < 0)
        return -1;
    int status = 0;
    int w = th_wait_for(pid, &status, timeout_ms);
    if (w == 0) {
        fprintf(stderr, "harness: %s took more than %d ms; killing it\n", argv[0], timeout_ms);
        kill(pid, SIGKILL);
        th_wait_for(pid, &status, 5000);
        return -1;
    }
    if (w < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "harness: %s failed (status %d)\n", argv[0], status);
        print_log_tail(pg);
        return -1;
    }
    return 0;
}

/* A file of the server's user with the password (initdb's --pwfile reads it as that user). */
static int write_initdb_pwfile(const th_pg_t *pg, const char *path)
{
    if (th_write_file(path, pg->password, 0600) != 0)
        return -1;
    if (geteuid() == 0 && chown(path, pg->uid, pg->gid) != 0) {
        fprintf(stderr, "harness: chown %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int initdb(th_pg_t *pg)
{
    char *pwfile = th_fmt("%s/initdb.pw", pg->dir);
    char *exe = th_fmt("%s/initdb", pg->bin);
    char *data = th_fmt("%s/data", pg->dir);
    char *pwarg = pwfile ? th_fmt("--pwfile=%s", pwfile) : NULL;
    int rc = -1;
    if (pwfile && exe && data && pwarg && write_initdb_pwfile(pg, pwfile) == 0) {
        char *argv[] = {exe,
                        "-D",
                        data,
                        "-U",
                        PG_ADMIN,
                        pwarg,
                        "--auth=scram-sha-256",
                        "-E",
                        "UTF8",
                        "--locale=C",
                        "--no-sync",
                        "--no-instructions",
                        NULL};
        rc = run_tool(pg, argv, PG_INITDB_TIMEOUT_MS);
    }
    if (pwfile)
        unlink(pwfile);
    free(pwarg);
    free(data);
    free(exe);
    free(pwfile);
    return rc;
}

/* "host=127.0.0.1 port=P user=ADMIN dbname=DB password=..." (heap). */
static char *admin_conninfo(const th_pg_t *pg, const char *db)
{
    return th_fmt("host=127.0.0.1 port=%d user=" PG_ADMIN " dbname=%s password=%s "
                  "connect_timeout=5",
                  pg->port, db, pg->password);
}

/* Starts the postmaster on pg->port and waits until it answers; 1 when the port was taken. */
static int start_server(th_pg_t *pg)
{
    char *exe = th_fmt("%s/postgres", pg->bin);
    char *data = th_fmt("%s/data", pg->dir);
    char *port = th_fmt("%d", pg->port);
    char *sockets = th_fmt("unix_socket_directories=%s", pg->dir);
    int rc = -1;
    if (!exe || !data || !port || !sockets)
        goto out;
    char *argv[] = {exe,
                    "-D",
                    data,
                    "-p",
                    port,
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    sockets,
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "shared_buffers=32MB",
                    "-c",
                    "max_connections=200",
                    NULL};
    pg->pid = spawn(pg, argv);
    if (pg->pid < 0)
        goto out;
    char ping[128];
    snprintf(ping, sizeof ping, "host=127.0.0.1 port=%d dbname=postgres connect_timeout=2",
             pg->port);
    for (int waited = 0; waited < PG_START_TIMEOUT_MS; waited += 50) {
        int status = 0;
        if (th_wait_for(pg->pid, &status, 0) != 0) {
            pg->pid = -1;
            char *log = th_read_file(pg->log_path, NULL);
            int taken = log && strstr(log, "could not bind") != NULL;
            free(log);
            if (taken) {
                rc = 1;
                goto out;
            }
            fprintf(stderr, "harness: the PostgreSQL server exited while starting\n");
            print_log_tail(pg);
            goto out;
        }
        if (PQping(ping) == PQPING_OK) {
            rc = 0;
            goto out;
        }
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "harness: the PostgreSQL server did not answer within %d ms\n",
            PG_START_TIMEOUT_MS);
    print_log_tail(pg);
    th_pg_stop_only(pg);
out:
    free(sockets);
    free(port);
    free(data);
    free(exe);
    return rc;
}

static void quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* Runs sql as the administrator on database db. */
static int exec_on(const th_pg_t *pg, const char *db, const char *sql, PGresult **out)
{
    char *ci = admin_conninfo(pg, db);
    if (!ci)
        return -1;
    PGconn *c = PQconnectdb(ci);
    free(ci);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "harness: cannot connect to PostgreSQL as " PG_ADMIN ": %s",
                PQerrorMessage(c));
        PQfinish(c);
        return -1;
    }
    PQsetNoticeProcessor(c, quiet, NULL); /* "database ... does not exist, skipping" */
    PGresult *r = PQexec(c, sql);
    ExecStatusType s = PQresultStatus(r);
    int rc = s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK ? 0 : -1;
    if (rc)
        fprintf(stderr, "harness: %s: %s", sql, PQerrorMessage(c));
    if (out && !rc)
        *out = r;
    else
        PQclear(r);
    PQfinish(c);
    return rc;
}

int th_pg_exec(const th_pg_t *pg, const char *sql)
{
    return exec_on(pg, pg->db, sql, NULL);
}

long long th_pg_query_int(const th_pg_t *pg, const char *sql)
{
    PGresult *r = NULL;
    if (exec_on(pg, pg->db, sql, &r) != 0)
        return -1;
    long long v = -1;
    if (PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    else
        fprintf(stderr, "harness: %s: no value\n", sql);
    PQclear(r);
    return v;
}

int th_pg_new_database(th_pg_t *pg, const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len >= sizeof pg->db ||
        strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != len) {
        fprintf(stderr, "harness: database name \"%s\" is not [a-z0-9_]+\n", name);
        return -1;
    }
    char *drop = th_fmt("DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    char *create = th_fmt("CREATE DATABASE %s OWNER " PG_ROLE, name);
    int rc = drop && create && exec_on(pg, "postgres", drop, NULL) == 0 &&
                     exec_on(pg, "postgres", create, NULL) == 0
                 ? 0
                 : -1;
    free(create);
    free(drop);
    if (rc)
        return -1;
    snprintf(pg->db, sizeof pg->db, "%s", name);
    snprintf(pg->url, sizeof pg->url, "postgresql://" PG_ROLE "@127.0.0.1:%d/%s", pg->port, name);
    return 0;
}

/* The password, the client's password file and the role the tests log in as. */
static int make_password(th_pg_t *pg)
{
    unsigned char raw[16];
    if (sg_random_bytes(raw, sizeof raw) != SG_OK) {
        fprintf(stderr, "harness: no random bytes for the PostgreSQL password\n");
        return -1;
    }
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(pg->password + 2 * i, 3, "%02x", raw[i]);
    snprintf(pg->password_file, sizeof pg->password_file, "%s/scopegate.pw", pg->dir);
    char *line = th_fmt("%s\n", pg->password);
    int rc = line ? th_write_file(pg->password_file, line, 0600) : -1;
    free(line);
    return rc;
}

int th_pg_start(th_pg_t *pg)
{
    memset(pg, 0, sizeof *pg);
    pg->pid = -1;
    if (find_bin(pg) || find_user(pg) || make_dir(pg))
        goto fail;
    snprintf(pg->log_path, sizeof pg->log_path, "%s/server.log", pg->dir);
    if (make_password(pg) || initdb(pg))
        goto fail;
    /* The port is free when probed; another process may take it before the server binds. */
    int started = -1;
    for (int attempt = 0; attempt < 3 && started != 0; attempt++) {
        pg->port = th_free_port();
        if (pg->port < 0)
            goto fail;
        started = start_server(pg);
        if (started < 0)
            goto fail;
    }
    if (started != 0) {
        fprintf(stderr, "harness: no free port for PostgreSQL in three tries\n");
        goto fail;
    }
    char *role = th_fmt("CREATE ROLE " PG_ROLE " LOGIN PASSWORD '%s'", pg->password);
    int rc = role ? exec_on(pg, "postgres", role, NULL) : -1;
    free(role);
    if (rc || th_pg_new_database(pg, PG_ROLE))
        goto fail;
    return 0;
fail:
    th_pg_stop(pg);
    return -1;
}

int th_pg_stop_only(th_pg_t *pg)
{
    if (pg->pid <= 0)
        return 0;
    int status = 0, rc = -1;
    kill(pg->pid, SIGINT); /* fast shutdown: disconnects every client */
    int w = th_wait_for(pg->pid, &status, PG_STOP_TIMEOUT_MS);
    if (w == 0) {
        fprintf(stderr, "harness: PostgreSQL (pid %d) ignored its fast shutdown for %d ms\n",
                (int)pg->pid, PG_STOP_TIMEOUT_MS);
        kill(pg->pid, SIGQUIT);
        if (th_wait_for(pg->pid, &status, 5000) == 0) {
            kill(pg->pid, SIGKILL);
            th_wait_for(pg->pid, &status, 5000);
        }
    } else if (w > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        rc = 0;
    } else if (w > 0) {
        fprintf(stderr, "harness: PostgreSQL exited with status %d\n", status);
        print_log_tail(pg);
    }
    pg->pid = -1;
    return rc;
}

int th_pg_start_again(th_pg_t *pg)
{
    if (pg->pid > 0) {
        fprintf(stderr, "harness: PostgreSQL is already running\n");
        return -1;
    }
    int rc = start_server(pg);
    if (rc == 1)
        fprintf(stderr, "harness: port %d was taken while PostgreSQL was stopped\n", pg->port);
    return rc == 0 ? 0 : -1;
}

int th_pg_restart(th_pg_t *pg)
{
    if (th_pg_stop_only(pg) != 0)
        return -1;
    return th_pg_start_again(pg);
}

int th_pg_stop(th_pg_t *pg)
{
    int rc = th_pg_stop_only(pg);
    if (pg->dir[0]) {
        th_remove_tree(pg->dir);
        pg->dir[0] = '\0';
    }
    return rc;
}
