/*
 * A small W3C WebDriver client for the browser tests: runs /usr/bin/chromedriver on a free
 * loopback port and drives headless Chromium (/usr/bin/chromium) through chromedriver's
 * HTTP+JSON API with libcurl and cJSON. No npm, no Python, no Selenium.
 *
 * Everything the browser writes stays in one temporary folder per driver: a fresh profile per
 * session (so a new session starts with no cookies), and XDG_CONFIG_HOME, XDG_CACHE_HOME and
 * TMPDIR for Chromium's crash database, caches and scoped folders. wd_stop removes it.
 *
 * Processes: chromedriver is our child, in our process group (so meson's timeout kill reaches
 * it), and dies with us (PR_SET_PDEATHSIG). Chromium is started with --remote-debugging-pipe,
 * so it exits when chromedriver does, even when this process crashes; deleting the session
 * ends it normally. wd_stop sends chromedriver SIGTERM, reaps it, then waits for every process
 * whose working directory is the temp folder (chromedriver starts there; Chromium's processes
 * inherit it) to end, and kills any that do not.
 *
 * A failing call prints why on stderr (with WebDriver's error code and message) and returns -1,
 * or NULL for the calls that return a heap string, so a test can assert on the result and
 * still read what went wrong.
 */
#ifndef SG_TEST_WEBDRIVER_H
#define SG_TEST_WEBDRIVER_H

/* The Debian packages chromium-driver and chromium. */
#ifndef WD_CHROMEDRIVER
#define WD_CHROMEDRIVER "/usr/bin/chromedriver"
#endif
#ifndef WD_CHROMIUM
#define WD_CHROMIUM "/usr/bin/chromium"
#endif

#include <stddef.h>

#include <cjson/cJSON.h>

/* The browser window of every session (--window-size), in CSS pixels: a desktop. The page
 * gets a little less height (the window's frame: 1280x757 with Chromium 156). */
#define WD_WINDOW_WIDTH  1280
#define WD_WINDOW_HEIGHT 900

typedef struct wd_driver wd_driver_t;

/*
 * Checks that both binaries exist (a clear message naming the Debian packages when not),
 * starts chromedriver --port=N on a free port and waits (20 s max) until GET /status says
 * ready. *out is NULL on failure.
 */
int wd_start(wd_driver_t **out);
/* Deletes a live session, stops chromedriver (SIGTERM, waitpid), removes the temp folder.
 * Returns 0 when every process it started is gone. NULL is a no-op. */
int wd_stop(wd_driver_t *d);

/* A new browser with a fresh profile (no cookies, no history). One session at a time. */
int wd_session_new(wd_driver_t *d);
/* Closes the browser, waits for it to exit and removes its profile. No-op without a session. */
int wd_session_delete(wd_driver_t *d);

/* Loads url and waits for the page load to finish. */
int wd_navigate(wd_driver_t *d, const char *url);
/* The first element matching a CSS selector, waiting up to WD_IMPLICIT_MS for it to appear:
 * its WebDriver reference (heap), or NULL after printing the URL and title of the page. */
#define WD_IMPLICIT_MS 3000
char *wd_find(wd_driver_t *d, const char *css);
/* How many elements match now (no waiting); -1 on error. */
int wd_count(wd_driver_t *d, const char *css);
int wd_send_keys(wd_driver_t *d, const char *element, const char *text);
/* Clicks; when the click submits a form, returns after the next page has loaded. */
int wd_click(wd_driver_t *d, const char *element);
/* Rendered text of an element, or its "value" property (heap) — NULL on error. */
char *wd_text(wd_driver_t *d, const char *element);
char *wd_value(wd_driver_t *d, const char *element);

/* The top-level browsing context's URL, the page's HTML as the browser serialises it, and
 * its title (heap, NULL on error). */
char *wd_current_url(wd_driver_t *d);
char *wd_page_source(wd_driver_t *d);
char *wd_title(wd_driver_t *d);
/* Polls the current URL until it starts with prefix (timeout_ms max); the URL (heap) or NULL
 * after printing the URL and title the browser was left on. */
char *wd_wait_url(wd_driver_t *d, const char *prefix, int timeout_ms);

/* Runs script (a function body, no arguments) in the page; its return value when that is a
 * string (heap), else NULL after a message. */
char *wd_script_string(wd_driver_t *d, const char *script);
/* The same for a script that returns a number: 0 with *out set (truncated toward zero), or
 * -1 after a message. */
int wd_script_int(wd_driver_t *d, const char *script, long *out);
/* Every cookie the browser would send to the current page, as WebDriver's GET
 * /session/{id}/cookie gives them: a JSON array of objects with "name", "value", "path",
 * "domain", "secure", "httpOnly", "sameSite" and, for persistent cookies, "expiry" (heap:
 * cJSON_Delete it), or NULL on error. */
cJSON *wd_cookies(wd_driver_t *d);
/* The cookie called name in wd_cookies' array, or NULL (no message) when there is none. */
const cJSON *wd_cookie_in(const cJSON *cookies, const char *name);

/*
 * The browser's console messages since the previous call (chromedriver hands each entry out
 * once: reading drains the log, so a later call sees only newer messages), through
 * chromedriver's POST /session/{id}/se/log {"type":"browser"}: a JSON array of objects with
 * "level" ("SEVERE", "WARNING", "INFO", ...), "message", "source" ("security" for CSP
 * violations, "javascript", "network", "console-api", ...) and "timestamp" (ms since the
 * epoch) — heap: cJSON_Delete it — or NULL on error.
 */
cJSON *wd_browser_log(wd_driver_t *d);
/* Drains the console log (as wd_browser_log) and counts the Content-Security-Policy
 * violations in it (Chromium's message names the "Content Security Policy directive" that was
 * violated); the first one's message goes into first (cut to firstlen, "" when there is none)
 * unless first is NULL. -1 on error. Call it once before the steps under test to start from
 * an empty log. */
int wd_csp_violations(wd_driver_t *d, char *first, size_t firstlen);

/*
 * Emulates a screen of width x height CSS pixels at device scale 1 through the DevTools
 * command Emulation.setDeviceMetricsOverride. With mobile set, Chromium lays pages out as a
 * phone does: it honours the viewport meta tag, so a page without one lays out 980 px wide,
 * and one whose content is wider than width is zoomed out to show all of it (innerWidth then
 * grows past width; see wd_overflow). Without mobile the page simply gets a window width px
 * wide. Takes effect on the next load: navigate (or reload) after it. Lasts until
 * wd_clear_viewport or the end of the session.
 */
int wd_set_viewport(wd_driver_t *d, int width, int height, int mobile);
/* Back to the session's desktop window (WD_WINDOW_WIDTH x WD_WINDOW_HEIGHT). */
int wd_clear_viewport(wd_driver_t *d);

/*
 * How many CSS pixels the current page sticks out to the right of the screen: the widest of
 * the document's scrollWidth and the right edge of every rendered element and text (not
 * display:none, not zero-sized, not inside a box that clips or scrolls sideways) against
 * innerWidth — or, after wd_set_viewport, against the emulated width when that is smaller: a
 * phone zooms out to a page wider than its screen and innerWidth grows with it. 0 when nothing
 * sticks out by more than 1 px (rounding); -1 on error. what (unless NULL) describes the
 * rightmost thing, e.g. "table#grants.wide right=663 innerWidth=663 scrollWidth=663
 * screen=390" ("screen=" only when innerWidth grew past the emulated width).
 */
int wd_overflow(wd_driver_t *d, char *what, size_t whatlen);

/* Saves a PNG of the viewport to path. */
int wd_screenshot(wd_driver_t *d, const char *path);
/* When $SG_SCREENSHOT_DIR is set, saves $SG_SCREENSHOT_DIR/NAME.png, creating the folder and
 * its parents (0755) when missing; otherwise does nothing. Returns 0 in both cases, -1 only
 * when a requested screenshot could not be written. */
int wd_snapshot(wd_driver_t *d, const char *name);

#endif
