/* Text output: aligned tables, "key: value" blocks, and formatting of reply values. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "migctl/migctl-internal.h"

#define TABLE_GAP "  "

struct table {
	const struct table_column *columns; /* borrowed: callers pass static arrays */
	size_t n_columns;
	char **cells; /* n_rows * n_columns, row-major */
	size_t n_rows;
	size_t alloc_rows;
};

struct table *table_new(const struct table_column *columns, size_t n_columns)
{
	struct table *t;

	if (n_columns == 0)
		return NULL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->columns = columns;
	t->n_columns = n_columns;
	return t;
}

struct table *table_free(struct table *t)
{
	if (!t)
		return NULL;
	for (size_t i = 0; i < t->n_rows * t->n_columns; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t);
	return NULL;
}

static char *strdup_printable(const char *s)
{
	char *copy = strdup(s);

	if (!copy)
		return NULL;
	for (char *p = copy; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	return copy;
}

int table_add_row(struct table *t, const char *const *cells)
{
	if (t->n_rows == t->alloc_rows) {
		size_t na = t->alloc_rows ? t->alloc_rows * 2 : 16;
		char **nc = reallocarray(t->cells, na * t->n_columns, sizeof(char *));

		if (!nc)
			return -ENOMEM;
		t->cells = nc;
		t->alloc_rows = na;
	}
	for (size_t i = 0; i < t->n_columns; i++) {
		char *c = strdup_printable(cells[i] ? cells[i] : "-");

		if (!c) {
			for (size_t j = 0; j < i; j++)
				free(t->cells[t->n_rows * t->n_columns + j]);
			return -ENOMEM;
		}
		t->cells[t->n_rows * t->n_columns + i] = c;
	}
	t->n_rows++;
	return 0;
}

/* Terminal columns of a UTF-8 string, counting each code point as one. */
static size_t text_width(const char *s)
{
	size_t w = 0;

	for (; *s; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			w++;
	return w;
}

static void print_cell(FILE *f, const char *s, size_t width, bool right, bool last)
{
	size_t pad = width - MIN(width, text_width(s));

	if (right)
		fprintf(f, "%*s", (int)pad, "");
	fputs(s, f);
	/* No trailing blanks after the last column. */
	if (!right && !last)
		fprintf(f, "%*s", (int)pad, "");
	fputs(last ? "\n" : TABLE_GAP, f);
}

int table_print(const struct table *t, FILE *f)
{
	_cleanup_free_ size_t *widths = calloc(t->n_columns, sizeof(size_t));

	if (!widths)
		return -ENOMEM;
	for (size_t c = 0; c < t->n_columns; c++) {
		widths[c] = text_width(t->columns[c].header);
		for (size_t r = 0; r < t->n_rows; r++)
			widths[c] = MAX(widths[c], text_width(t->cells[r * t->n_columns + c]));
	}
	for (size_t c = 0; c < t->n_columns; c++)
		print_cell(f, t->columns[c].header, widths[c], t->columns[c].right,
			   c == t->n_columns - 1);
	for (size_t r = 0; r < t->n_rows; r++)
		for (size_t c = 0; c < t->n_columns; c++)
			print_cell(f, t->cells[r * t->n_columns + c], widths[c],
				   t->columns[c].right, c == t->n_columns - 1);
	return 0;
}

char *format_json_string(char *buf, size_t len, json_t *v)
{
	strscpy(buf, json_is_string(v) ? json_string_value(v) : "-", len);
	return buf;
}

char *format_json_integer(char *buf, size_t len, json_t *v)
{
	if (json_is_integer(v))
		snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
	else
		strscpy(buf, "-", len);
	return buf;
}

char *format_json_number(char *buf, size_t len, json_t *v, int decimals)
{
	if (json_is_number(v) && isfinite(json_number_value(v)))
		snprintf(buf, len, "%.*f", decimals, json_number_value(v));
	else
		strscpy(buf, "-", len);
	return buf;
}

char *format_json_bool(char *buf, size_t len, json_t *v)
{
	strscpy(buf, json_is_boolean(v) ? (json_is_true(v) ? "yes" : "no") : "-", len);
	return buf;
}

char *format_json_bytes(char *buf, size_t len, json_t *v)
{
	if (json_is_integer(v) && json_integer_value(v) >= 0)
		return format_bytes(buf, len, (uint64_t)json_integer_value(v));
	strscpy(buf, "-", len);
	return buf;
}

char *format_bytes_short(char *buf, size_t len, uint64_t bytes)
{
	char *suffix;

	format_bytes(buf, len, bytes);
	suffix = strstr(buf, "iB");
	if (suffix)
		*suffix = 0;
	return buf;
}

char *format_uptime(char *buf, size_t len, double seconds)
{
	uint64_t s;

	if (!isfinite(seconds) || seconds < 0 || seconds >= 1e15) {
		strscpy(buf, "-", len);
		return buf;
	}
	s = (uint64_t)seconds;
	if (s < 60)
		snprintf(buf, len, "%" PRIu64 "s", s);
	else if (s < 3600)
		snprintf(buf, len, "%" PRIu64 "m %" PRIu64 "s", s / 60, s % 60);
	else if (s < 86400)
		snprintf(buf, len, "%" PRIu64 "h %" PRIu64 "m", s / 3600, s % 3600 / 60);
	else
		snprintf(buf, len, "%" PRIu64 "d %" PRIu64 "h", s / 86400, s % 86400 / 3600);
	return buf;
}

void fputs_printable(const char *s, FILE *f)
{
	for (; *s; s++)
		fputc((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s, f);
}

void print_key_values(FILE *f, const struct key_value *rows, size_t n)
{
	size_t width = 0;

	for (size_t i = 0; i < n; i++)
		width = MAX(width, text_width(rows[i].key));
	for (size_t i = 0; i < n; i++) {
		fprintf(f, "%*s: ", (int)width, rows[i].key);
		fputs_printable(rows[i].value ? rows[i].value : "-", f);
		fputc('\n', f);
	}
}
