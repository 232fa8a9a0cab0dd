/*
 * manpage.c - brisk(1) in roff (see manpage.h).
 *
 * The SETTINGS section is the table config.c parses and `brisk --help`
 * prints, row by row; the rest (commands, signals, exit status, files) is
 * text here that describes main.c and http/server.c. tests/deploy/test_man.py
 * checks the settings against --help and the page against groff's warnings.
 */
#include "manpage.h"

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "config.h"

/* Text as roff: backslashes and hyphens escaped (so "--addr" and
 * "dev-receipt-key" copy and paste as ASCII), a control character at the
 * start of a line made literal. */
static void roff_text(FILE *out, const char *s)
{
    if (*s == '.' || *s == '\'')
        fputs("\\&", out);
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\e", out);
        else if (*s == '-')
            fputs("\\-", out);
        else if (*s == '\n')
            fputc(' ', out);
        else
            fputc(*s, out);
    }
}

static const char k_head[] =
    ".nh\n" /* no hyphenation: flags, URLs and header names stay whole */
    ".ad l\n"
    ".SH NAME\n"
    "brisk \\- users and orders HTTP/1.1 JSON API server\n"
    ".SH SYNOPSIS\n"
    ".B brisk serve\n"
    "[\\fB\\-\\-\\fIname\\fB=\\fIvalue\\fR ...]\n"
    ".br\n"
    ".B brisk migrate\n"
    "[\\fB\\-\\-\\fIname\\fB=\\fIvalue\\fR ...]\n"
    ".br\n"
    ".B brisk\n"
    "\\fB\\-\\-help\\fR | \\fB\\-\\-version\\fR\n"
    ".SH DESCRIPTION\n"
    ".B brisk\n"
    "serves a users and orders API as HTTP/1.1 with JSON bodies.\n"
    "It runs one event loop per CPU it may use, each with its own listener and\n"
    "database handle, and stores its data in SQLite (embedded, the default) or in\n"
    "PostgreSQL, whose client library\n"
    ".B libpq.so.5\n"
    "it loads at start\\-up only when the database URL names PostgreSQL.\n"
    "After start\\-up it runs under a seccomp allowlist of the system calls it needs;\n"
    "started as root with\n"
    ".B BRISK_USER\n"
    "it switches to that account once the port is bound and the files are open.\n"
    ".PP\n"
    "Endpoints:\n"
    ".B GET /health\n"
    "(liveness, never touches the database),\n"
    ".B GET /ready\n"
    "(readiness: 200 when the database answers),\n"
    ".B GET /metrics\n"
    "(Prometheus text), and the API under\n"
    ".B /users\n"
    "and\n"
    ".BR /orders .\n"
    "Errors are always JSON objects\n"
    "\\fB{\"error\":\"\\fImessage\\fB\"}\\fR.\n"
    ".SH COMMANDS\n"
    ".TP\n"
    ".B serve\n"
    "Apply the database migrations, bind\n"
    ".B BRISK_ADDR\n"
    "and serve until SIGTERM or SIGINT.\n"
    ".TP\n"
    ".B migrate\n"
    "Apply the database migrations and exit.\n"
    ".TP\n"
    "\\fB\\-\\-help\\fR, \\fB\\-h\\fR, \\fBhelp\\fR\n"
    "Print the usage and the settings table, then exit 0;\n"
    "also after a command\n"
    ".RB ( \"brisk serve \\-\\-help\" ).\n"
    ".TP\n"
    "\\fB\\-\\-version\\fR, \\fBversion\\fR\n"
    "Print the version and exit 0.\n"
    ".TP\n"
    ".B help\\-man\n"
    "Print this manual page as roff (what\n"
    ".B make man\n"
    "installs), then exit 0.\n"
    ".PP\n"
    "Without a command\n"
    ".B brisk\n"
    "prints the usage and exits 2.\n"
    ".SH SETTINGS\n"
    "Every setting is an environment variable and a flag of\n"
    ".B serve\n"
    "and\n"
    ".BR migrate ;\n"
    "a flag wins over the variable.\n"
    "A flag is written\n"
    "\\fB\\-\\-\\fIname\\fB=\\fIvalue\\fR or \\fB\\-\\-\\fIname value\\fR.\n"
    "A bad value stops start\\-up with one line naming the setting, exit status 2.\n"
    "The values of\n"
    ".BR BRISK_API_TOKEN ,\n"
    ".B BRISK_RECEIPT_KEY\n"
    "and the database URLs are never printed or logged.\n";

static const char k_tail[] =
    ".SH ENVIRONMENT\n"
    "The\n"
    ".B BRISK_\n"
    "variables of\n"
    ".BR SETTINGS .\n"
    "For a PostgreSQL database libpq also reads its own variables\n"
    ".RB ( PGPASSWORD ,\n"
    ".BR PGSSLMODE ,\n"
    ".BR PGSSLROOTCERT ,\n"
    "\\&...; see the PostgreSQL documentation of libpq).\n"
    ".SH SIGNALS\n"
    ".TP\n"
    "\\fBSIGTERM\\fR, \\fBSIGINT\\fR\n"
    "Drain, then exit 0.\n"
    "For\n"
    ".B BRISK_DRAIN_GRACE_MS\n"
    "the listeners keep accepting and idle keep\\-alive connections stay open, every\n"
    "response carrying\n"
    ".BR \"Connection: close\" ;\n"
    "then the listeners close, idle connections close and requests in flight finish.\n"
    "The process exits when the last connection is gone, or after\n"
    ".B BRISK_DRAIN_SECONDS\n"
    "at most.\n"
    "A second signal during the drain changes nothing; SIGKILL ends the process at once.\n"
    ".TP\n"
    ".B SIGPIPE\n"
    "Ignored (a peer that closed its connection is seen as a write error).\n"
    ".TP\n"
    ".B SIGHUP\n"
    "With TLS on: load BRISK_TLS_CERT and BRISK_TLS_KEY again; new connections use\n"
    "the new pair, connections in flight keep theirs, and a pair that does not load\n"
    "is logged and the old one kept. Other settings are read at start\\-up only:\n"
    "restart the service to change one.\n"
    ".PP\n"
    "Every other signal has its default action.\n"
    ".SH EXIT STATUS\n"
    ".TP\n"
    ".B 0\n"
    "Drained and stopped after SIGTERM or SIGINT;\n"
    ".B migrate\n"
    "applied the migrations;\n"
    ".B \\-\\-help\n"
    "or\n"
    ".BR \\-\\-version .\n"
    ".TP\n"
    ".B 1\n"
    "Start\\-up failed for a reason other than a setting (the port is in use, the\n"
    "database cannot be opened or migrated), or a fatal error while serving.\n"
    ".TP\n"
    ".B 2\n"
    "Usage or setting error: no command, an unknown command or flag, a bad value,\n"
    "a listen host name that does not resolve, a PostgreSQL URL without a loadable\n"
    ".BR libpq.so.5 .\n"
    ".PP\n"
    "A process killed by SIGSYS (status 159 in a shell) made a system call outside\n"
    "its seccomp allowlist;\n"
    ".B BRISK_SANDBOX=log\n"
    "logs such calls instead of refusing them.\n"
    ".SH FILES\n"
    ".TP\n"
    ".I ./data/brisk.db\n"
    "The default SQLite database, relative to the working directory, with its\n"
    ".I \\-wal\n"
    "and\n"
    ".I \\-shm\n"
    "files beside it: the directory must be writable by the account brisk serves as.\n"
    ".TP\n"
    ".I libpq.so.5\n"
    "PostgreSQL's client library (Debian package libpq5), loaded only for a\n"
    "PostgreSQL URL.\n"
    ".TP\n"
    "\\fI/etc/passwd\\fR, \\fI/etc/group\\fR\n"
    "Where the account of\n"
    ".B BRISK_USER\n"
    "is looked up.\n"
    ".TP\n"
    ".I /usr/local/lib/systemd/system/brisk.service\n"
    "The systemd unit\n"
    ".B make install\n"
    "writes (under\n"
    ".IR PREFIX ,\n"
    "default\n"
    ".IR /usr/local );\n"
    "it serves from\n"
    ".I /var/lib/brisk/brisk.db\n"
    "as a dynamic user.\n"
    ".TP\n"
    ".I /etc/brisk/brisk.env\n"
    "The unit's environment file: settings as\n"
    ".IB VARIABLE = value\n"
    "lines.\n"
    ".TP\n"
    ".I /data/brisk.db\n"
    "The database in the container image (a volume).\n"
    ".SH SEE ALSO\n"
    ".BR systemd.exec (5),\n"
    ".BR sqlite3 (1);\n"
    "README.md and docs/operations.md in the source tree.\n";

void manpage_write(FILE *out, const char *version)
{
    fputs(".TH BRISK 1 \"\" \"brisk ", out);
    roff_text(out, version);
    fputs("\" \"User Commands\"\n", out);
    fputs(k_head, out);
    struct config_setting s;
    for (size_t i = 0; config_setting_at(i, &s); i++) {
        fputs(".TP\n\\fB\\-\\-", out);
        roff_text(out, s.flag);
        fputs("\\fR=\\fIvalue\\fR, \\fB", out);
        roff_text(out, s.env);
        fputs("\\fR\n", out);
        roff_text(out, s.help);
        size_t n = strlen(s.help);
        fputs(n && s.help[n - 1] == '.' ? "\n" : ".\n", out);
        if (s.def[0]) {
            fputs(".br\nDefault: \\fB", out);
            roff_text(out, s.def);
            fputs("\\fR\n", out);
        }
    }
    fputs(k_tail, out);
}
