/* The migctl module's public header: run the command-line client on an argument vector. */
#pragma once

#include <stdio.h>

/* Parses global options, runs the verb and returns the process exit status (see migctl(8)).
 * Regular output goes to out, diagnostics to err. */
int migctl_main(int argc, char **argv, FILE *out, FILE *err);
