/* cluectl: command line, dispatch and help. The commands live in cmd_<group>.c. */

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "build_info.h"
#include "cli.h"

#define DEFAULT_SERVER "127.0.0.1:50051"

/* Every command group, in the order help lists them. Add new groups here. */
static const cli_group_t *const groups[] = {
    &cli_group_health, &cli_group_clue,  &cli_group_case,  &cli_group_rect,
    &cli_group_audit,  &cli_group_stats, &cli_group_token, &cli_group_admin,
};
#define NGROUPS (sizeof(groups) / sizeof(groups[0]))

static const cli_opt_t global_opts[] = {
    {"server", "HOST:PORT", 0, "server address (env CLUED_SERVER, default " DEFAULT_SERVER ")"},
    {"token", "TOKEN", 0, "bearer token sent with every call (env CLUED_TOKEN; see below)"},
    {"token-file", "PATH", 0, "read the bearer token from this file (- for stdin): not in ps"},
    {"timeout", "SECONDS", 0,
     "deadline of each call, e.g. 5 or 0.5; 0: none (default: 60, and none for a watch)"},
    {"tls", NULL, 0,
     "connect over TLS, trusting the system's CAs (env CLUED_TLS=1; 0/false/no/off: not)"},
    {"ca", "FILE", 0, "TLS: trust the CAs in this PEM file (env CLUED_CA; implies --tls)"},
    {"cert", "FILE", 0, "TLS: client certificate, PEM (env CLUED_CERT; implies --tls)"},
    {"key", "FILE", 0, "TLS: key of --cert if not in that file (env CLUED_KEY)"},
    {"insecure-cleartext", NULL, 0,
     "send the token without TLS to a non-loopback server (env CLUED_INSECURE_CLEARTEXT=1)"},
    {"json", NULL, 0, "print results as JSON"},
    {"help", NULL, 0, "show help (also: -h, cluectl help COMMAND)"},
    {"version", NULL, 0, "print cluectl's version and the git commit it was built from"},
    {NULL, NULL, 0, NULL},
};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig) {
  (void)sig;
  interrupted = 1;
}

/* ---- help ------------------------------------------------------------------------ */

static int is_single(const cli_group_t *g) {
  return g->commands[0].name == NULL;
}

static void print_opts(FILE *o, const cli_opt_t *opts) {
  for (const cli_opt_t *p = opts; p != NULL && p->name != NULL; p++) {
    char left[64];
    snprintf(left, sizeof(left), "--%s%s%s", p->name, p->metavar ? " " : "",
             p->metavar ? p->metavar : "");
    fprintf(o, "  %-26s %s%s%s\n", left, p->help,
            (p->flags & CLI_OPT_REQUIRED) ? " (required)" : "",
            (p->flags & CLI_OPT_REPEAT) ? " (repeatable)" : "");
  }
}

static void print_usage_line(FILE *o, const cli_group_t *g, const cli_command_t *c) {
  fprintf(o, "Usage: cluectl %s%s%s", g->name, c->name ? " " : "", c->name ? c->name : "");
  if (c->operand != NULL)
    fprintf(o, " %s", c->operand);
  for (const cli_opt_t *p = c->opts; p != NULL && p->name != NULL; p++) {
    int req = (p->flags & CLI_OPT_REQUIRED) != 0;
    fprintf(o, " %s--%s%s%s%s%s", req ? "" : "[", p->name, p->metavar ? " " : "",
            p->metavar ? p->metavar : "", req ? "" : "]", (p->flags & CLI_OPT_REPEAT) ? "..." : "");
  }
  fputc('\n', o);
  /* A group that is itself one command ("stats") names its other commands here too. */
  if (c == &g->commands[0] && c->name == NULL)
    for (const cli_command_t *n = c + 1; n->name != NULL; n++)
      fprintf(o, "   or: cluectl %s %s [OPTIONS]  (cluectl %s %s --help)\n", g->name, n->name,
              g->name, n->name);
}

static void help_top(FILE *o) {
  fputs("Usage: cluectl [GLOBAL OPTIONS] COMMAND [OPTIONS]\n\n"
        "Command-line client of clued, the problem-clue workflow server.\n\nCommands:\n",
        o);
  for (size_t i = 0; i < NGROUPS; i++)
    fprintf(o, "  %-12s %s\n", groups[i]->name, groups[i]->summary);
  fprintf(o, "  %-12s %s\n", "help", "show help of a command: cluectl help admin units");
  fprintf(o, "  %-12s %s\n", "completion",
          "print a bash completion script: source <(cluectl completion bash)");
  fputs("\nGlobal options (accepted before or after the command; after it, a command's own\n"
        "option of the same name wins: audit verify and audit witness take --key as a\n"
        "verifier key, so give a TLS --key before the command):\n",
        o);
  print_opts(o, global_opts);
  fputs("\nA --token on the command line can be read by every local user (ps, /proc) while\n"
        "cluectl runs: prefer CLUED_TOKEN or --token-file, whose file holds the token alone\n"
        "(a line break after it is ignored).\n",
        o);
  fputs("\nWithout TLS the token goes only to a loopback --server (127.0.0.0/8, ::1,\n"
        "localhost): for any other, cluectl refuses (exit 2) unless --insecure-cleartext is\n"
        "given, as clued serve refuses cleartext off loopback without its option of that name.\n"
        "CLUED_TLS and CLUED_INSECURE_CLEARTEXT take 1, true, yes or on, or 0, false, no, off\n"
        "or empty, in any case; any other value (spaces included) is a usage error (exit 2).\n",
        o);
  fputs("\nExit status: 0 success; 1 the call failed (STATUS: message on stderr) or the\n"
        "answer was negative (health: not SERVING; audit verify: a broken chain); 2 usage\n"
        "error (nothing was sent).\n"
        "\nEvery command that changes something has a --request-id option: it sends a request\n"
        "id, a new random UUID unless --request-id is given, prints it with --json, and names\n"
        "it when the outcome is unknown. Retrying with the same id and the same fields makes\n"
        "the change at most once; a retried token issue revokes the token its first attempt\n"
        "issued and prints a new one, so one id leaves one live token.\n",
        o);
}

static void help_help(FILE *o) {
  fputs("Usage: cluectl help [COMMAND [SUBCOMMAND]]\n\n"
        "Show the help of cluectl, of a command or of a subcommand: 'cluectl help admin units'\n"
        "is 'cluectl admin units --help'.\n",
        o);
}

static void help_completion(FILE *o) {
  fputs("Usage: cluectl completion bash\n\n"
        "Print a bash completion script for cluectl, generated from its command table: it\n"
        "completes commands, subcommands and their options. Load it in the current shell with\n"
        "  source <(cluectl completion bash)\n"
        "or install it as a file bash-completion reads, such as\n"
        "  cluectl completion bash > /etc/bash_completion.d/cluectl\n"
        "Only bash is supported.\n",
        o);
}

static void help_group(FILE *o, const cli_group_t *g) {
  fprintf(o, "Usage: cluectl %s COMMAND [OPTIONS]\n\n%s.\n\nCommands:\n", g->name, g->summary);
  for (const cli_command_t *c = g->commands; c->run != NULL; c++) {
    char left[40];
    snprintf(left, sizeof(left), "%s%s%s", c->name, c->operand ? " " : "",
             c->operand ? c->operand : "");
    fprintf(o, "  %-22s %s\n", left, c->summary);
  }
  fprintf(o, "\nRun 'cluectl %s COMMAND --help' for the options of a command.\n", g->name);
}

static void help_command(FILE *o, const cli_group_t *g, const cli_command_t *c) {
  print_usage_line(o, g, c);
  fprintf(o, "\n%s.\n", c->summary);
  if (c->opts != NULL && c->opts[0].name != NULL) {
    fputs("\nOptions:\n", o);
    print_opts(o, c->opts);
  }
  if (c->help != NULL)
    fprintf(o, "\n%s", c->help);
  fputs("\nGlobal options: --server, --token, --token-file, --timeout, --tls, --ca, --cert,\n"
        "--key, --insecure-cleartext, --json (see 'cluectl --help').\n",
        o);
  for (const cli_opt_t *glob = global_opts; glob->name != NULL; glob++)
    for (const cli_opt_t *own = c->opts; own != NULL && own->name != NULL; own++)
      if (strcmp(own->name, glob->name) == 0)
        fprintf(o,
                "After the command, --%s is this command's own option: give the global --%s\n"
                "before the command (cluectl --%s %s %s %s ...), or in the environment.\n",
                glob->name, glob->name, glob->name, glob->metavar ? glob->metavar : "", g->name,
                c->name);
}

/* ---- bash completion, generated from the command table -------------------------------- */

static void completion_opts(FILE *o, const cli_opt_t *opts) {
  for (const cli_opt_t *p = opts; p != NULL && p->name != NULL; p++)
    fprintf(o, " --%s", p->name);
}

/* The options that take a value, so the word after one is not a command. */
static void completion_valued(FILE *o, const cli_opt_t *opts) {
  for (const cli_opt_t *p = opts; p != NULL && p->name != NULL; p++)
    if (p->metavar != NULL)
      fprintf(o, "|--%s", p->name);
}

static void completion_bash(FILE *o) {
  fputs("# bash completion for cluectl, generated by `cluectl completion bash` from its command\n"
        "# table. Load it with: source <(cluectl completion bash)\n"
        "_cluectl() {\n"
        "  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}\n"
        "  local group='' cmd='' i w skip=0\n"
        "  for ((i = 1; i < COMP_CWORD; i++)); do\n"
        "    w=${COMP_WORDS[i]}\n"
        "    if ((skip)); then skip=0; continue; fi\n"
        "    case $w in\n"
        "      --*=*) continue ;;\n"
        "      --=",
        o);
  completion_valued(o, global_opts);
  for (size_t i = 0; i < NGROUPS; i++)
    for (const cli_command_t *c = groups[i]->commands; c->run != NULL; c++)
      completion_valued(o, c->opts);
  fputs(") skip=1; continue ;;\n"
        "      -*) continue ;;\n"
        "    esac\n"
        "    if [[ -z $group ]]; then group=$w; elif [[ -z $cmd ]]; then cmd=$w; fi\n"
        "  done\n"
        "  case $prev in\n"
        "    --*file|--ca|--cert|--key|--out|--checkpoint|--dir)\n"
        "      COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n"
        "  esac\n"
        "  local words=''\n"
        "  case $group in\n"
        "    '') words='help completion",
        o);
  for (size_t i = 0; i < NGROUPS; i++)
    fprintf(o, " %s", groups[i]->name);
  fputs("' ;;\n", o);
  for (size_t i = 0; i < NGROUPS; i++) {
    const cli_group_t *g = groups[i];
    fprintf(o, "    %s)\n", g->name);
    /* A group's unnamed command (stats) takes its options right after the group name. */
    fputs("      case $cmd in\n        '') words='", o);
    for (const cli_command_t *c = g->commands; c->run != NULL; c++)
      if (c->name != NULL)
        fprintf(o, " %s", c->name);
    if (is_single(g))
      completion_opts(o, g->commands[0].opts);
    fputs("' ;;\n", o);
    for (const cli_command_t *c = g->commands; c->run != NULL; c++) {
      if (c->name == NULL)
        continue;
      fprintf(o, "        %s) words='", c->name);
      completion_opts(o, c->opts);
      fputs("' ;;\n", o);
    }
    fputs("      esac ;;\n", o);
  }
  fputs("    completion) words='bash' ;;\n"
        "  esac\n"
        "  if [[ $cur == -* ]]; then words+='",
        o);
  completion_opts(o, global_opts);
  fputs("'; fi\n"
        "  COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n"
        "}\n"
        "complete -F _cluectl cluectl\n",
        o);
}

/* ---- command line ------------------------------------------------------------------- */

typedef struct globals {
  const char *server;
  const char *token;
  const char *token_from; /* where token came from: "--token" or "CLUED_TOKEN" */
  const char *token_file; /* --token-file */
  const char *timeout;
  const char *ca, *cert, *key; /* TLS files */
  int tls;
  int insecure_cleartext; /* the token may go without TLS to any host */
  const char *bad_env;    /* a yes/no variable set to neither: refused before connecting */
  int json;
  int help;
  int version;
} globals_t;

static const cli_opt_t *find_opt(const cli_opt_t *opts, const char *name, size_t len) {
  for (const cli_opt_t *p = opts; p != NULL && p->name != NULL; p++)
    if (strlen(p->name) == len && strncmp(p->name, name, len) == 0)
      return p;
  return NULL;
}

static const cli_group_t *find_group(const char *name) {
  for (size_t i = 0; i < NGROUPS; i++)
    if (strcmp(groups[i]->name, name) == 0)
      return groups[i];
  return NULL;
}

static const cli_command_t *find_command(const cli_group_t *g, const char *name) {
  for (const cli_command_t *c = g->commands; c->run != NULL; c++)
    if (c->name != NULL && strcmp(c->name, name) == 0)
      return c;
  return NULL;
}

static int parse_timeout(const char *s, uint64_t *ms) {
  char *end;
  double v;

  /* Seconds in decimal, as the help says: strtod alone would take 0x10, 1e3 or " 5". */
  if (s[0] == '\0' || s[strspn(s, "0123456789.")] != '\0')
    return -1;
  errno = 0;
  v = strtod(s, &end);
  if (end == s || *end != '\0' || errno != 0 || !isfinite(v) || v < 0 || v > 8640000)
    return -1;
  v *= 1000;
  *ms = (uint64_t)v;
  if ((double)*ms < v) /* round up: a deadline is never shorter than asked */
    (*ms)++;
  return 0;
}

typedef struct parsed {
  globals_t g;
  const cli_group_t *group;
  const cli_command_t *cmd;
  int help_word;  /* "help" appeared as a command word */
  int help_help;  /* "help help": the help command's own help */
  int completion; /* "completion": the next word names the shell */
  const char *shell;
  cli_args_t args;
} parsed_t;

/* Parse argv; returns -1 to go on, or an exit code (usage errors are reported). */
static int parse(cli_t *cli, int argc, char **argv, parsed_t *p, char *cmdname, size_t cmdlen) {
  int words_only = 0;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];

    if (!words_only && strcmp(a, "--") == 0) {
      words_only = 1;
      continue;
    }
    if (!words_only && a[0] == '-' && a[1] != '\0') {
      const char *name = a + 2, *eq, *value = NULL;
      const cli_opt_t *opt = NULL;
      size_t len;
      int global = 0;

      if (strcmp(a, "-h") == 0) {
        p->g.help = 1;
        continue;
      }
      if (a[1] != '-')
        return cli_usage_error(cli, "unknown option '%s'", a);
      eq = strchr(name, '=');
      len = eq ? (size_t)(eq - name) : strlen(name);
      if (p->cmd != NULL)
        opt = find_opt(p->cmd->opts, name, len);
      if (opt == NULL && (opt = find_opt(global_opts, name, len)) != NULL)
        global = 1;
      if (opt == NULL)
        return cli_usage_error(cli, "unknown option '--%.*s'", (int)len, name);
      if (opt->metavar != NULL) {
        if (eq != NULL)
          value = eq + 1;
        else if (i + 1 < argc)
          value = argv[++i];
        else
          return cli_usage_error(cli, "--%s needs a value (%s)", opt->name, opt->metavar);
      } else if (eq != NULL) {
        return cli_usage_error(cli, "--%s takes no value", opt->name);
      }
      if (!global) {
        if (!(opt->flags & CLI_OPT_REPEAT) && cli_flag(&p->args, opt->name))
          return cli_usage_error(cli, "--%s given more than once", opt->name);
        p->args.v[p->args.n].opt = opt;
        p->args.v[p->args.n].value = value;
        p->args.n++;
      } else if (strcmp(opt->name, "server") == 0) {
        p->g.server = value;
      } else if (strcmp(opt->name, "token") == 0) {
        p->g.token = value;
        p->g.token_from = "--token";
      } else if (strcmp(opt->name, "token-file") == 0) {
        p->g.token_file = value;
      } else if (strcmp(opt->name, "timeout") == 0) {
        p->g.timeout = value;
      } else if (strcmp(opt->name, "tls") == 0) {
        p->g.tls = 1;
      } else if (strcmp(opt->name, "insecure-cleartext") == 0) {
        p->g.insecure_cleartext = 1;
      } else if (strcmp(opt->name, "ca") == 0) {
        p->g.ca = value;
      } else if (strcmp(opt->name, "cert") == 0) {
        p->g.cert = value;
      } else if (strcmp(opt->name, "key") == 0) {
        p->g.key = value;
      } else if (strcmp(opt->name, "json") == 0) {
        p->g.json = 1;
      } else if (strcmp(opt->name, "version") == 0) {
        p->g.version = 1;
      } else {
        p->g.help = 1;
      }
      continue;
    }
    /* a word: the group, then the command, then nothing */
    if (p->completion) {
      if (p->shell != NULL)
        return cli_usage_error(cli, "unexpected argument '%s'", a);
      p->shell = a;
      continue;
    }
    if (p->group == NULL) {
      if (strcmp(a, "help") == 0 && !p->help_help) {
        /* "help help" asks about help itself, as "help completion" about completion */
        if (p->help_word)
          p->help_help = 1;
        p->help_word = 1;
        continue;
      }
      if (strcmp(a, "completion") == 0 && !p->help_help) {
        p->completion = 1;
        continue;
      }
      p->group = find_group(a);
      if (p->group == NULL)
        return cli_usage_error(cli, "unknown command '%s'", a);
      if (is_single(p->group))
        p->cmd = &p->group->commands[0];
      snprintf(cmdname, cmdlen, "%s", a);
      cli->cmd = cmdname;
      continue;
    }
    if (p->cmd == NULL) {
      if (strcmp(a, "help") == 0) {
        p->help_word = 1;
        continue;
      }
      p->cmd = find_command(p->group, a);
      if (p->cmd == NULL)
        return cli_usage_error(cli, "unknown command '%s'", a);
      snprintf(cmdname, cmdlen, "%s %s", p->group->name, a);
      continue;
    }
    if (p->help_word)
      continue;
    /* A group that is itself one command ("stats") may also have named ones ("stats
     * bulletin"), chosen by the first word after the group before any option. */
    if (is_single(p->group) && p->cmd == &p->group->commands[0] && p->args.n == 0 &&
        p->args.operand == NULL && find_command(p->group, a) != NULL) {
      p->cmd = find_command(p->group, a);
      snprintf(cmdname, cmdlen, "%s %s", p->group->name, a);
      continue;
    }
    if (p->cmd->operand != NULL && p->args.operand == NULL) {
      p->args.operand = a;
      continue;
    }
    return cli_usage_error(cli, "unexpected argument '%s'", a);
  }
  return -1;
}

/* Whether target (HOST:PORT as libclue takes it) names this machine by a loopback address or
 * as localhost: the only hosts a token goes to without TLS unless --insecure-cleartext says
 * otherwise (as clued serves cleartext only there). A name that merely resolves to loopback
 * does not count: what it resolves to may change. */
static int loopback_target(const char *target) {
  char host[INET6_ADDRSTRLEN + 8];
  const char *h = target, *end, *colon = strchr(target, ':');
  unsigned char a[sizeof(struct in6_addr)];
  size_t len;

  if (target[0] == '[') {
    h = target + 1;
    end = strchr(h, ']');
  } else if (colon != NULL && strchr(colon + 1, ':') == NULL) {
    end = colon;
  } else {
    end = target + strlen(target); /* no port, or a bare IPv6 address */
  }
  if (end == NULL || (len = (size_t)(end - h)) >= sizeof(host))
    return 0;
  memcpy(host, h, len);
  host[len] = '\0';
  if (strcasecmp(host, "localhost") == 0 || strcasecmp(host, "localhost.") == 0)
    return 1;
  if (inet_pton(AF_INET, host, a) == 1)
    return a[0] == 127;
  if (inet_pton(AF_INET6, host, a) == 1)
    return IN6_IS_ADDR_LOOPBACK((struct in6_addr *)a) ||
           (IN6_IS_ADDR_V4MAPPED((struct in6_addr *)a) && a[12] == 127);
  return 0;
}

/* The token of the connection: --token-file's, or --token's, or CLUED_TOKEN's. Returns -1
 * to go on, or an exit code (reported). */
static int set_token(cli_t *cli, const parsed_t *p) {
  const char *token = p->g.token, *from = p->g.token_from;
  char *text = NULL;
  size_t len = 0;
  int rv;

  if (p->g.token_file != NULL) {
    if (p->g.token_from != NULL && strcmp(p->g.token_from, "--token") == 0)
      return cli_usage_error(cli, "--token and --token-file cannot both be given");
    if ((rv = cli_read_file(cli, p->g.token_file, &text, &len)) != 0)
      return rv;
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
      text[--len] = '\0';
    if (len == 0 || strlen(text) != len) {
      free(text);
      return cli_usage_error(cli, "--token-file: %s holds no token (or a NUL byte)",
                             strcmp(p->g.token_file, "-") == 0 ? "standard input"
                                                               : p->g.token_file);
    }
    token = text;
    from = "--token-file";
  }
  /* A token pasted with its scheme or with spaces is never valid: say what to give. */
  if (token != NULL && (strncasecmp(token, "Bearer ", 7) == 0 || token[0] == ' ' ||
                        (token[0] != '\0' && token[strlen(token) - 1] == ' '))) {
    free(text);
    return cli_usage_error(cli,
                           "%s: give the token alone, without \"Bearer \" or spaces around it "
                           "(cluectl sends the authorization header itself)",
                           from != NULL ? from : "--token");
  }
  if (token != NULL && strlen(token) > CLUE_MAX_TOKEN_LEN) {
    size_t n = strlen(token);

    free(text);
    return cli_usage_error(cli, "%s: the token is %zu bytes, and tokens are short (at most %d)%s",
                           from != NULL ? from : "--token", n, CLUE_MAX_TOKEN_LEN,
                           p->g.token_file != NULL ? ": is --token-file the right file?" : "");
  }
  cli->no_token = token == NULL || token[0] == '\0';
  rv = clue_conn_set_token(cli->conn, token);
  free(text);
  if (rv == CLUE_EINVAL)
    return cli_usage_error(cli, "%s: the token contains control characters (a line break?)",
                           from != NULL ? from : "--token");
  if (rv != 0)
    return cli_oom(cli);
  return -1;
}

/* Whether target, as libclue parses it, names its port: "[v6]:PORT" or "host:PORT" (a bare
 * IPv6 address has colons but no port). */
static int has_port(const char *target) {
  const char *close = strchr(target, ']'), *colon = strchr(target, ':');

  if (target[0] == '[')
    return close != NULL && close[1] == ':' && close[2] != '\0';
  return colon != NULL && strchr(colon + 1, ':') == NULL && colon[1] != '\0';
}

static int setup(cli_t *cli, const parsed_t *p) {
  int rv;

  /* Before anything connects; --help and --version still answer. */
  if (p->g.bad_env != NULL)
    return cli_usage_error(
        cli, "%s must be 1, true, yes or on, or 0, false, no, off or empty (got '%s')",
        p->g.bad_env, getenv(p->g.bad_env));
  cli->timeout_ms = CLI_DEFAULT_TIMEOUT_MS;
  if (p->g.timeout != NULL && parse_timeout(p->g.timeout, &cli->timeout_ms) != 0)
    return cli_usage_error(cli, "--timeout: '%s' is not a number of seconds (0: no deadline)",
                           p->g.timeout);
  cli->stream_timeout_ms = p->g.timeout != NULL ? cli->timeout_ms : 0;
  if (p->cmd->operand != NULL && p->args.operand == NULL)
    return cli_usage_error(cli, "missing %s", p->cmd->operand);
  for (const cli_opt_t *o = p->cmd->opts; o != NULL && o->name != NULL; o++)
    if ((o->flags & CLI_OPT_REQUIRED) && !cli_flag(&p->args, o->name))
      return cli_usage_error(cli, "--%s is required", o->name);
  cli->server = p->g.server;
  cli->json = p->g.json;
  rv = clue_conn_new(cli->server, &cli->conn);
  if (rv == CLUE_EINVAL)
    return cli_usage_error(cli, "--server: '%s' is not HOST:PORT", cli->server);
  if (rv == 0 && !has_port(cli->server))
    return cli_usage_error(cli,
                           "--server: '%s' has no port: give HOST:PORT (an IPv6 address in "
                           "brackets: [::1]:50051)",
                           cli->server);
  if (rv != 0)
    return cli_oom(cli);
  if ((rv = set_token(cli, p)) >= 0)
    return rv;
  if (p->g.key != NULL && p->g.cert == NULL)
    return cli_usage_error(cli, "--key (or CLUED_KEY) needs --cert (or CLUED_CERT)");
  if (p->g.tls || p->g.ca != NULL || p->g.cert != NULL) {
    clue_status_t st = CLUE_STATUS_INIT;
    rv = clue_conn_set_tls(cli->conn, p->g.ca, p->g.cert, p->g.key, &st);
    if (rv == CLUE_EINVAL) {
      rv = cli_usage_error(cli, "TLS: %s%s", st.message ? st.message : "invalid settings",
                           p->g.key == NULL && cli_flag(&p->args, "key")
                               ? " (the --key after the command is its own option: give the TLS "
                                 "key before the command)"
                               : "");
      clue_status_clear(&st);
      return rv;
    }
    clue_status_clear(&st);
    if (rv != 0)
      return cli_oom(cli);
  }
  if (!cli->no_token && !p->g.tls && p->g.ca == NULL && p->g.cert == NULL &&
      !p->g.insecure_cleartext && !loopback_target(cli->server))
    return cli_usage_error(cli,
                           "refusing to send the token in cleartext to %s, which is not a loopback "
                           "address: connect with --tls (or --ca FILE), or give "
                           "--insecure-cleartext (env CLUED_INSECURE_CLEARTEXT=1) to send it "
                           "unencrypted anyway",
                           cli->server);
  clue_conn_set_timeout(cli->conn, cli->timeout_ms);
  clue_conn_set_cancel_flag(cli->conn, &interrupted);
  return -1;
}

/* A variable set to something, or NULL. */
static const char *env_value(const char *name) {
  const char *v = getenv(name);
  return v != NULL && v[0] != '\0' ? v : NULL;
}

/* A yes/no variable into *on: 1, true, yes or on; 0, false, no, off or empty; unset leaves
 * *on alone. Any other value (a typo, a space around the word) is -1: a switch such as
 * CLUED_INSECURE_CLEARTEXT must not be read as on, nor quietly as off, when it says neither. */
static int env_bool(const char *name, int *on) {
  static const char *const words[] = {"1", "true", "yes", "on", "0", "false", "no", "off", ""};
  const char *v = getenv(name);

  if (v == NULL)
    return 0;
  for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
    if (strcasecmp(v, words[i]) == 0) {
      *on = i < 4;
      return 0;
    }
  return -1;
}

int main(int argc, char **argv) {
  char cmdname[128];
  cli_t cli = {0};
  parsed_t p = {0};
  struct sigaction sa;
  int rc;

  p.g.server = getenv("CLUED_SERVER");
  if (p.g.server == NULL || p.g.server[0] == '\0')
    p.g.server = DEFAULT_SERVER;
  p.g.token = getenv("CLUED_TOKEN");
  p.g.token_from = p.g.token != NULL ? "CLUED_TOKEN" : NULL;
  if (env_bool("CLUED_TLS", &p.g.tls) != 0)
    p.g.bad_env = "CLUED_TLS";
  if (env_bool("CLUED_INSECURE_CLEARTEXT", &p.g.insecure_cleartext) != 0)
    p.g.bad_env = "CLUED_INSECURE_CLEARTEXT";
  p.g.ca = env_value("CLUED_CA");
  p.g.cert = env_value("CLUED_CERT");
  p.g.key = env_value("CLUED_KEY");
  p.args.v = calloc((size_t)argc + 1, sizeof(*p.args.v));
  if (p.args.v == NULL)
    return cli_oom(&cli);
  cli.interrupted = &interrupted;

  rc = parse(&cli, argc, argv, &p, cmdname, sizeof(cmdname));
  if (rc >= 0)
    goto out;
  if (p.g.version) {
    printf("cluectl %s\ncommit %s\n", clued_version, clued_git_commit);
    rc = CLI_OK;
    goto out;
  }
  /* Help first: "completion --help" and "help completion" explain the command, whatever
   * shell was named. */
  if (p.completion && (p.g.help || p.help_word)) {
    help_completion(stdout);
    rc = CLI_OK;
    goto out;
  }
  if (p.help_help || (p.help_word && p.g.help && p.group == NULL && !p.completion)) {
    help_help(stdout);
    rc = CLI_OK;
    goto out;
  }
  if (p.completion) {
    if (p.shell == NULL || strcmp(p.shell, "bash") != 0) {
      rc = cli_usage_error(&cli, "completion: only 'bash' is supported (cluectl completion bash)");
      goto out;
    }
    completion_bash(stdout);
    rc = CLI_OK;
    goto out;
  }
  if (p.g.help || p.help_word) {
    if (p.cmd != NULL)
      help_command(stdout, p.group, p.cmd);
    else if (p.group != NULL)
      help_group(stdout, p.group);
    else
      help_top(stdout);
    rc = CLI_OK;
    goto out;
  }
  if (p.group == NULL) {
    fputs("cluectl: missing command\n\n", stderr);
    help_top(stderr);
    rc = CLI_USAGE;
    goto out;
  }
  if (p.cmd == NULL) {
    fprintf(stderr, "cluectl %s: missing command\n\n", p.group->name);
    help_group(stderr, p.group);
    rc = CLI_USAGE;
    goto out;
  }
  rc = setup(&cli, &p);
  if (rc >= 0)
    goto out;

  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal; /* no SA_RESTART: a blocked poll() returns and sees the flag */
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);

  rc = p.cmd->run(&cli, &p.args);
  if (fflush(stdout) != 0 || ferror(stdout)) {
    fprintf(stderr, "cluectl: cannot write output: %s\n", strerror(errno));
    rc = CLI_FAILED;
  }
out:
  clue_conn_free(cli.conn);
  free(p.args.v);
  return rc;
}
