/*
 * cmd — edgecache's offline commands, run instead of the daemon:
 *   edgecache verify [--repair] [options]   rehash the store (cmd_verify.c)
 *   edgecache import [--admin-url URL] [options] MANIFEST FILE...
 *                                           sideload files (cmd_import.c)
 *   edgecache rewrite --cache-url URL [options] FILE|-
 *                                           a manifest for children (cmd_rewrite.c)
 *   edgecache health [options]              ask the running daemon's /healthz
 *                                           (cmd_health.c)
 * Each takes argv with argv[0] naming the command and returns the process's
 * exit status.
 */
#ifndef EDGECACHE_CMD_H
#define EDGECACHE_CMD_H

int cmd_verify(int argc, char **argv);
int cmd_rewrite(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_health(int argc, char **argv);

#endif
