/* schema.S: embeds schema.sql into the daemon as db_schema_sql, a NUL-terminated string, so an
 * installed binary always carries the schema it was built with. */
	.section .rodata
	.global db_schema_sql
	.type db_schema_sql, @object
	.balign 16
db_schema_sql:
	.incbin SCHEMA_PATH
	.byte 0
	.size db_schema_sql, . - db_schema_sql
	.section .note.GNU-stack, "", @progbits
