/*
 * The gateway stack (see harness.h): a temporary folder with a copy of the demo org whose
 * callbacks are the gateway's, the gateway's config, secrets and policy; sfsim and
 * $SCOPEGATE serve started on it (the gateway's port probed and held until it binds, the
 * whole stack started again when another process takes it meanwhile), restarted, killed,
 * stopped and removed. Also a stack behind a reverse proxy (th_stack_start_public) and what
 * the vault's tests add: the JWT-bearer integration, a crash, the internal listener's key.
 */
#include "harness_int.h"

#include <errno.h>
#include <fcntl.h>
#include <libconfig.h>
#include <libgen.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the gateway stack ------------------------------------------------------------------ */

const char th_default_policy[] =
    "# The e2e tests' policy: the demo org's policy shape (tests/harness/harness.h).\n"
    "version = 1;\n"
    "signin = { app = \"signin\"; scopes = [\"openid\", \"profile\", \"email\"]; };\n"
    "roles = {\n"
    "  user = { session = { idle = \"30m\"; max = \"8h\"; }; };\n"
    "  admin = { offline = { app = \"api\"; scopes = [\"api\", \"refresh_token\", "
    "\"offline_access\"]; };\n"
    "            session = { idle = \"15m\"; max = \"4h\"; }; };\n"
    "  auditor = { session = { idle = \"30m\"; max = \"8h\"; }; };\n"
    "};\n"
    "assign = (\n"
    "  { role = \"admin\"; claim = \"preferred_username\"; in = [\"admin@demo.example\"]; },\n"
    "  { role = \"auditor\"; claim = \"custom_attributes.role\"; in = [\"admin\"]; },\n"
    "  { role = \"user\"; }\n"
    ");\n";

#define STACK_SIGNIN_ID     "demo-signin"
#define STACK_SIGNIN_SECRET "demo-signin-secret"
#define STACK_API_ID        "demo-api"
#define STACK_API_SECRET    "demo-api-secret"
#define STACK_LOG_TAIL      16384

/* ---- ports ------------------------------------------------------------------------------- */

/* A loopback socket bound to a free port and kept open (close-on-exec, so no child holds it),
 * so nothing else started meanwhile can take the port; -1 on failure. */
static int probe_port(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("harness: socket");
        return -1;
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) != 0) {
        perror("harness: bind 127.0.0.1:0");
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

int th_free_port(void)
{
    int port = -1;
    int fd = probe_port(&port);
    if (fd < 0)
        return -1;
    close(fd);
    return port;
}

/* ---- the org's copy, the gateway's process ----------------------------------------------- */

/* A relative path setting made absolute against dir (sfsim resolves it against the config's
 * folder, and the copy lives elsewhere). */
static int absolutize_setting(config_setting_t *group, const char *name, const char *dir)
{
    const char *value = NULL;
    if (!group || !config_setting_lookup_string(group, name, &value) || !*value || value[0] == '/')
        return 0;
    char *abs = th_fmt("%s/%s", dir, value);
    config_setting_t *s = config_setting_get_member(group, name);
    int rc = abs && s && config_setting_set_string(s, abs) ? 0 : -1;
    free(abs);
    return rc;
}

static int set_callback(config_setting_t *app, const char *callback)
{
    const char *client_id = NULL;
    if (!config_setting_lookup_string(app, "client_id", &client_id) ||
        (strcmp(client_id, STACK_SIGNIN_ID) != 0 && strcmp(client_id, STACK_API_ID) != 0))
        return 0;
    if (config_setting_get_member(app, "callbacks") && !config_setting_remove(app, "callbacks"))
        return -1;
    config_setting_t *list = config_setting_add(app, "callbacks", CONFIG_TYPE_ARRAY);
    return list && config_setting_set_string_elem(list, -1, callback) ? 0 : -1;
}

/* The demo org names the demo gateway's addresses (its Single Logout URL, logout URL); the
 * copy names this stack's public_url instead. */
#define DEMO_GATEWAY_URL "http://127.0.0.1:8080"

static int rebase_string(config_setting_t *s, const char *public_url)
{
    const char *v = config_setting_get_string(s);
    size_t n = strlen(DEMO_GATEWAY_URL);
    if (!v || strncmp(v, DEMO_GATEWAY_URL, n) != 0 || (v[n] && v[n] != '/'))
        return 0;
    char *moved = th_fmt("%s%s", public_url, v + n);
    int rc = moved && config_setting_set_string(s, moved) ? 0 : -1;
    free(moved);
    return rc;
}

/* rebase_string on group.name, a string or a list of them, when it is there. */
static int rebase_setting(config_setting_t *group, const char *name, const char *public_url)
{
    config_setting_t *s = group ? config_setting_get_member(group, name) : NULL;
    if (!s)
        return 0;
    if (config_setting_type(s) == CONFIG_TYPE_STRING)
        return rebase_string(s, public_url);
    for (int i = 0; i < config_setting_length(s); i++)
        if (rebase_string(config_setting_get_elem(s, (unsigned)i), public_url))
            return -1;
    return 0;
}

/* Writes to path a copy of $SFSIM_DEMO_CFG whose demo-signin and demo-api callbacks are
 * public_url + "/oauth/callback" only, and whose other addresses of the demo gateway are
 * public_url's. */
static int write_org_copy(const char *path, const char *public_url)
{
    const char *src = getenv("SFSIM_DEMO_CFG");
    if (!src || !*src) {
        fprintf(stderr, "harness: SFSIM_DEMO_CFG is not set (meson's test_env sets it)\n");
        return -1;
    }
    char *src_copy = strdup(src);
    const char *dir = src_copy ? dirname(src_copy) : NULL;
    char *callback = th_fmt("%s/oauth/callback", public_url);
    config_t cfg;
    config_init(&cfg);
    int rc = -1;
    if (!dir || !callback)
        goto done;
    if (!config_read_file(&cfg, src)) {
        fprintf(stderr, "harness: %s:%d: %s\n", src, config_error_line(&cfg),
                config_error_text(&cfg));
        goto done;
    }
    config_setting_t *apps = config_lookup(&cfg, "apps");
    int napps = apps ? config_setting_length(apps) : 0;
    for (int i = 0; i < napps; i++) {
        config_setting_t *app = config_setting_get_elem(apps, (unsigned)i);
        if (set_callback(app, callback) || absolutize_setting(app, "jwt_certificate", dir) ||
            rebase_setting(app, "single_logout_url", public_url) ||
            rebase_setting(app, "post_logout_redirect_uris", public_url))
            goto done;
    }
    if (absolutize_setting(config_lookup(&cfg, "settings"), "key_file", dir) ||
        rebase_setting(config_lookup(&cfg, "org"), "logout_url", public_url))
        goto done;
    if (!config_write_file(&cfg, path)) {
        fprintf(stderr, "harness: cannot write %s\n", path);
        goto done;
    }
    rc = 0;
done:
    if (rc)
        fprintf(stderr, "harness: could not write a copy of %s for the gateway at %s\n", src,
                public_url);
    config_destroy(&cfg);
    free(src_copy);
    free(callback);
    return rc;
}

char *th_stack_log(const th_stack_t *s)
{
    return th_proc_log(&s->gw);
}

/* Prints the end of the gateway's log, for a test that has to say why it failed. */
static void print_gateway_log(const th_stack_t *s, const char *why)
{
    char *log = th_stack_log(s);
    size_t len = log ? strlen(log) : 0;
    const char *from = len > STACK_LOG_TAIL ? log + len - STACK_LOG_TAIL : (log ? log : "");
    fprintf(stderr, "harness: %s; the gateway's stderr%s:\n%s\n", why,
            len > STACK_LOG_TAIL ? " (its end)" : "", from);
    free(log);
}

/* Starts $SCOPEGATE serve --config s->gw_cfg, its stderr appended to s->gw_log, and waits for
 * "scopegate listening on URL (internal URL)". */
static int gateway_spawn(th_stack_t *s)
{
    th_proc_t *p = &s->gw;
    memset(p, 0, sizeof *p);
    p->pid = -1;
    const char *exe = getenv("SCOPEGATE");
    if (!exe || !*exe) {
        fprintf(stderr, "harness: SCOPEGATE must name the gateway binary (meson's test_env "
                        "sets it)\n");
        return -1;
    }
    snprintf(p->log_path, sizeof p->log_path, "%s", s->gw_log);
    int logfd = open(s->gw_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (logfd < 0) {
        fprintf(stderr, "harness: cannot open %s: %s\n", s->gw_log, strerror(errno));
        return -1;
    }
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        perror("harness: pipe");
        close(logfd);
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("harness: fork");
        close(pipefd[0]);
        close(pipefd[1]);
        close(logfd);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (dup2(pipefd[1], STDOUT_FILENO) < 0 || dup2(logfd, STDERR_FILENO) < 0)
            _exit(126);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) {
            dup2(devnull, STDIN_FILENO);
            close(devnull);
        }
        execl(exe, exe, "serve", "--config", s->gw_cfg, (char *)NULL);
        dprintf(STDERR_FILENO, "harness: exec %s: %s\n", exe, strerror(errno));
        _exit(127);
    }
    close(pipefd[1]);
    close(logfd);
    p->pid = pid;

    char line[TH_FIRST_LINE_MAX];
    static const char prefix[] = "scopegate listening on ";
    static const char internal[] = " (internal ";
    const char *pub = NULL, *in = NULL, *pub_end = NULL, *in_end = NULL;
    if (th_read_first_line(pipefd[0], line, sizeof line, TH_START_TIMEOUT_MS) == 0 &&
        strncmp(line, prefix, sizeof prefix - 1) == 0) {
        pub = line + sizeof prefix - 1;
        pub_end = strstr(pub, internal);
        in = pub_end ? pub_end + sizeof internal - 1 : NULL;
        in_end = in ? strchr(in, ')') : NULL;
    }
    if (!in_end || pub_end - pub >= (long)sizeof p->url ||
        in_end - in >= (long)sizeof s->internal_url) {
        close(pipefd[0]);
        print_gateway_log(s, "the gateway did not start (expected the first stdout line "
                             "\"scopegate listening on URL (internal URL)\")");
        char keep[sizeof p->log_path];
        memcpy(keep, p->log_path, sizeof keep);
        p->log_path[0] = '\0'; /* the log is the stack's, not th_proc_stop's to remove */
        th_proc_stop(p);
        memcpy(p->log_path, keep, sizeof keep);
        return -1;
    }
    snprintf(p->url, sizeof p->url, "%.*s", (int)(pub_end - pub), pub);
    snprintf(s->internal_url, sizeof s->internal_url, "%.*s", (int)(in_end - in), in);
    th_remember_fd(pid, pipefd[0]);
    if (strcmp(p->url, s->url) != 0) {
        fprintf(stderr, "harness: the gateway listens on %s, expected %s (its listen key)\n",
                p->url, s->url);
        return -1;
    }
    return 0;
}

/* SIGTERM to the gateway; its exit status (see th_proc_stop). Keeps the log. */
static int gateway_stop(th_stack_t *s)
{
    if (s->gw.pid <= 0)
        return 0;
    char keep[sizeof s->gw.log_path];
    memcpy(keep, s->gw.log_path, sizeof keep);
    s->gw.log_path[0] = '\0';
    int status = th_proc_stop(&s->gw);
    memcpy(s->gw.log_path, keep, sizeof keep);
    if (status != 0)
        print_gateway_log(s, "the gateway did not exit 0 after SIGTERM");
    return status;
}

static int stack_path(char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap) {
        fprintf(stderr, "harness: path %s/%s is too long\n", dir, name);
        return -1;
    }
    return 0;
}

int th_stack_start(th_stack_t *s, const char *policy_text)
{
    th_stack_opts_t o = {.policy = policy_text};
    return th_stack_start_opts(s, &o);
}

/* Did the gateway fail to start because its port was taken? Between the probe's close and
 * the gateway's bind another process may take the port; then the whole stack starts again. */
static int port_was_taken(const th_stack_t *s)
{
    if (!s->gw_log[0])
        return 0;
    char *log = th_stack_log(s);
    int taken = log && strstr(log, "cannot listen on") != NULL;
    free(log);
    return taken;
}

static int stack_try(th_stack_t *s, const th_stack_opts_t *opts, const char *public_url,
                     int *retry);
/* The jwt app's and the integration's config text (appended section below). */
static int jwt_parts(const th_stack_t *s, const th_stack_opts_t *opts, char **app, char **integ);

/* Starts the stack; public_url NULL means the gateway's own URL. Retries a taken port. */
static int stack_start(th_stack_t *s, const th_stack_opts_t *opts, const char *public_url)
{
    for (int attempt = 1;; attempt++) {
        int retry = 0;
        if (stack_try(s, opts, public_url, &retry) == 0)
            return 0;
        if (!retry || attempt == 3)
            return -1;
        fprintf(stderr, "harness: the gateway's port was taken meanwhile; starting again\n");
    }
}

int th_stack_start_opts(th_stack_t *s, const th_stack_opts_t *opts)
{
    return stack_start(s, opts, NULL);
}

static int stack_try(th_stack_t *s, const th_stack_opts_t *opts, const char *public_url, int *retry)
{
    memset(s, 0, sizeof *s);
    s->sim.pid = s->gw.pid = -1;
    th_stack_opts_t none = {0};
    if (!opts)
        opts = &none;
    const char *tmp = getenv("TMPDIR");
    int probe = -1;
    char *gw_text = NULL, *path = NULL;
    char *jwt_app = NULL, *jwt_integ = NULL;
    int n = snprintf(s->dir, sizeof s->dir, "%s/sg-stack-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (n < 0 || (size_t)n >= sizeof s->dir || !mkdtemp(s->dir)) {
        fprintf(stderr, "harness: cannot make a temporary folder: %s\n", strerror(errno));
        s->dir[0] = '\0';
        return -1;
    }
    if (stack_path(s->gw_cfg, sizeof s->gw_cfg, s->dir, "gateway.cfg") ||
        stack_path(s->policy, sizeof s->policy, s->dir, "policy.cfg") ||
        stack_path(s->state_dir, sizeof s->state_dir, s->dir, "state") ||
        stack_path(s->db, sizeof s->db, s->state_dir, "scopegate.db") ||
        stack_path(s->sim_cfg, sizeof s->sim_cfg, s->dir, "org.cfg") ||
        stack_path(s->gw_log, sizeof s->gw_log, s->dir, "gw.log"))
        goto fail;

    probe = probe_port(&s->port);
    if (probe < 0)
        goto fail;
    snprintf(s->url, sizeof s->url, "http://127.0.0.1:%d", s->port);
    if (!public_url)
        public_url = s->url;
    snprintf(s->public_url, sizeof s->public_url, "%s", public_url);
    if (write_org_copy(s->sim_cfg, public_url) || th_sfsim_start(&s->sim, s->sim_cfg))
        goto fail;

    if (jwt_parts(s, opts, &jwt_app, &jwt_integ))
        goto fail;
    gw_text = th_fmt("# written by tests/harness/stack.c\n"
                     "listen = \"127.0.0.1:%d\";\n"
                     "public_url = \"%s\";\n"
                     "internal_listen = \"127.0.0.1:0\";\n"
                     "policy_file = \"policy.cfg\";\n"
                     "state_dir = \"state\";\n"
                     "allow_http_issuer = true;\n"
                     "provider_timeout = \"%s\";\n"
                     "log_level = \"%s\";\n"
                     "apps = {\n"
                     "  signin = { issuer = \"%s\"; client_id = \"" STACK_SIGNIN_ID "\";\n"
                     "             client_secret_file = \"signin.secret\"; };\n"
                     "  api = { issuer = \"%s\"; client_id = \"" STACK_API_ID "\";\n"
                     "          client_secret_file = \"api.secret\"; };\n"
                     "%s"
                     "};\n%s%s%s",
                     s->port, public_url, opts->provider_timeout ? opts->provider_timeout : "2s",
                     opts->log_level ? opts->log_level : "debug", s->sim.url, s->sim.url,
                     jwt_app ? jwt_app : "", opts->extra_config ? opts->extra_config : "",
                     opts->extra_config ? "\n" : "", jwt_integ ? jwt_integ : "");
    if (!gw_text || th_write_file(s->gw_cfg, gw_text, 0600) ||
        th_write_file(s->policy, opts->policy ? opts->policy : th_default_policy, 0600))
        goto fail;
    path = th_fmt("%s/signin.secret", s->dir);
    if (!path || th_write_file(path, STACK_SIGNIN_SECRET "\n", 0600))
        goto fail;
    free(path);
    path = th_fmt("%s/api.secret", s->dir);
    if (!path || th_write_file(path, STACK_API_SECRET "\n", 0600))
        goto fail;

    close(probe); /* the gateway binds the port now */
    probe = -1;
    if (gateway_spawn(s))
        goto fail;
    free(gw_text);
    free(path);
    free(jwt_app);
    free(jwt_integ);
    return 0;
fail:
    if (probe >= 0)
        close(probe);
    free(gw_text);
    free(path);
    free(jwt_app);
    free(jwt_integ);
    *retry = port_was_taken(s);
    th_stack_stop(s);
    return -1;
}

int th_stack_restart_gateway(th_stack_t *s)
{
    if (gateway_stop(s) != 0) {
        fprintf(stderr, "harness: restart: the gateway did not exit 0 after SIGTERM\n");
        return -1;
    }
    return gateway_spawn(s);
}

int th_stack_stop(th_stack_t *s)
{
    int rc = 0;
    if (s->gw.pid > 0 && gateway_stop(s) != 0)
        rc = -1;
    if (s->sim.pid > 0 && th_proc_stop(&s->sim) != 0) {
        fprintf(stderr, "harness: sfsim did not exit 0 after SIGTERM\n");
        rc = -1;
    }
    if (s->dir[0]) {
        const char *keep = getenv("TH_KEEP_STACK");
        if (keep && *keep && strcmp(keep, "0") != 0)
            fprintf(stderr, "harness: kept the stack's folder %s\n", s->dir);
        else
            th_remove_tree(s->dir);
        s->dir[0] = '\0';
    }
    s->gw.log_path[0] = '\0';
    return rc;
}

/* ---- a stack behind a reverse proxy --------------------------------------------------------- */

int th_stack_start_public(th_stack_t *s, const th_stack_opts_t *opts, const char *public_url)
{
    if (!public_url || strncmp(public_url, "http", 4) != 0 ||
        public_url[strlen(public_url) - 1] == '/') {
        memset(s, 0, sizeof *s);
        s->sim.pid = s->gw.pid = -1;
        fprintf(stderr, "harness: public_url must be an http(s) URL without a trailing slash\n");
        return -1;
    }
    return stack_start(s, opts, public_url);
}

/* ---- the vault's tests: the JWT integration, a crash, the internal key ------------------ */

static int jwt_parts(const th_stack_t *s, const th_stack_opts_t *opts, char **app, char **integ)
{
    *app = *integ = NULL;
    if (!opts->jwt_integration)
        return 0;
    const char *demo = getenv("SFSIM_DEMO_CFG");
    char *demo_copy = demo ? strdup(demo) : NULL;
    char *secret = th_fmt("%s/jwt.secret", s->dir);
    int rc = -1;
    if (!demo_copy || !secret) {
        fprintf(stderr, "harness: SFSIM_DEMO_CFG is not set (it names jwt-demo.key's folder)\n");
        goto done;
    }
    if (th_write_file(secret, "demo-jwt-secret\n", 0600))
        goto done;
    *app = th_fmt("  jwt = { issuer = \"%s\"; client_id = \"demo-jwt\";\n"
                  "          client_secret_file = \"jwt.secret\"; };\n",
                  s->sim.url);
    *integ = th_fmt("integrations = {\n"
                    "  %s = { app = \"jwt\"; username = \"%s\"; org_id = \"" TH_DEMO_ORG_ID "\";\n"
                    "         private_key_file = \"%s/jwt-demo.key\"; };\n"
                    "};\n",
                    opts->jwt_integration, opts->jwt_username ? opts->jwt_username : TH_ADMIN,
                    dirname(demo_copy));
    rc = *app && *integ ? 0 : -1;
done:
    if (rc) {
        free(*app);
        free(*integ);
        *app = *integ = NULL;
    }
    free(demo_copy);
    free(secret);
    return rc;
}

int th_stack_kill_gateway(th_stack_t *s)
{
    if (s->gw.pid <= 0) {
        fprintf(stderr, "harness: kill: the gateway is not running\n");
        return -1;
    }
    pid_t pid = s->gw.pid;
    int status = 0;
    kill(pid, SIGKILL);
    int w = th_wait_for(pid, &status, TH_STOP_TIMEOUT_MS);
    th_forget_fd(pid);
    s->gw.pid = -1;
    if (w != 1 || !WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
        fprintf(stderr, "harness: kill: the gateway (pid %d) did not die from SIGKILL\n", (int)pid);
        return -1;
    }
    return 0;
}

int th_stack_crash_restart_gateway(th_stack_t *s)
{
    if (th_stack_kill_gateway(s))
        return -1;
    return gateway_spawn(s);
}

char *th_stack_internal_key(const th_stack_t *s)
{
    char *path = th_fmt("%s/internal.key", s->state_dir);
    char *key = path ? th_read_file(path, NULL) : NULL;
    free(path);
    if (!key)
        return NULL;
    size_t n = strlen(key);
    while (n > 0 && (key[n - 1] == '\n' || key[n - 1] == '\r' || key[n - 1] == ' '))
        key[--n] = '\0';
    return key;
}

/* ---- more instances of one gateway on a shared store -------------------------------------- */

/* Copies dir_from/name to dir_to/name with mode (0: skipped when missing). */
static int copy_file(const char *dir_from, const char *dir_to, const char *name, mode_t mode,
                     int required)
{
    char *from = th_fmt("%s/%s", dir_from, name), *to = th_fmt("%s/%s", dir_to, name);
    size_t len = 0;
    char *text = from && (required || access(from, F_OK) == 0) ? th_read_file(from, &len) : NULL;
    int rc = -1;
    if (!text && !required)
        rc = 0;
    else if (text && to)
        rc = th_write_file(to, text, mode);
    if (rc)
        fprintf(stderr, "harness: cannot copy %s to %s\n", from ? from : name, dir_to);
    free(text);
    free(from);
    free(to);
    return rc;
}

/* s's config text with its listen line on port instead, and extra (may be NULL) after it. */
static char *config_on_port(const th_stack_t *s, int port, const char *extra)
{
    char *text = th_read_file(s->gw_cfg, NULL);
    char *line = text ? strstr(text, "\nlisten = \"") : NULL;
    char *end = line ? strchr(line + 1, '\n') : NULL;
    char *out = end ? th_fmt("%.*s\nlisten = \"127.0.0.1:%d\";%s\n%s", (int)(line - text), text,
                             port, end, extra ? extra : "")
                    : NULL;
    free(text);
    return out;
}

int th_stack_add_instance(const th_stack_t *s, th_stack_t *inst)
{
    return th_stack_add_instance_with(s, NULL, inst);
}

int th_stack_add_instance_with(const th_stack_t *s, const char *extra_config, th_stack_t *inst)
{
    memset(inst, 0, sizeof *inst);
    inst->sim.pid = inst->gw.pid = -1;
    const char *tmp = getenv("TMPDIR");
    snprintf(inst->dir, sizeof inst->dir, "%s/sg-instance-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(inst->dir)) {
        fprintf(stderr, "harness: cannot make a temporary folder: %s\n", strerror(errno));
        inst->dir[0] = '\0';
        return -1;
    }
    char *cfg = NULL;
    int probe = -1;
    if (stack_path(inst->gw_cfg, sizeof inst->gw_cfg, inst->dir, "gateway.cfg") ||
        stack_path(inst->policy, sizeof inst->policy, inst->dir, "policy.cfg") ||
        stack_path(inst->state_dir, sizeof inst->state_dir, inst->dir, "state") ||
        stack_path(inst->gw_log, sizeof inst->gw_log, inst->dir, "gw.log") ||
        mkdir(inst->state_dir, 0700) != 0)
        goto fail;
    snprintf(inst->sim_cfg, sizeof inst->sim_cfg, "%s", s->sim_cfg);
    snprintf(inst->sim.url, sizeof inst->sim.url, "%s", s->sim.url); /* s's to stop, not ours */
    snprintf(inst->public_url, sizeof inst->public_url, "%s", s->public_url);
    probe = probe_port(&inst->port);
    if (probe < 0)
        goto fail;
    snprintf(inst->url, sizeof inst->url, "http://127.0.0.1:%d", inst->port);
    cfg = config_on_port(s, inst->port, extra_config);
    static const char *const keys[] = {"internal.key", "vault.key", "csrf.key", "login.key"};
    if (!cfg || th_write_file(inst->gw_cfg, cfg, 0600) ||
        copy_file(s->dir, inst->dir, "policy.cfg", 0600, 1) ||
        copy_file(s->dir, inst->dir, "signin.secret", 0600, 1) ||
        copy_file(s->dir, inst->dir, "api.secret", 0600, 1) ||
        copy_file(s->dir, inst->dir, "jwt.secret", 0600, 0))
        goto fail;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (copy_file(s->state_dir, inst->state_dir, keys[i], 0600, 1))
            goto fail;
    close(probe);
    probe = -1;
    if (gateway_spawn(inst))
        goto fail;
    free(cfg);
    return 0;
fail:
    if (probe >= 0)
        close(probe);
    free(cfg);
    th_stack_stop(inst);
    return -1;
}
