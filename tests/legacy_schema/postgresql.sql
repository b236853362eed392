-- The tables MessageApp created with SQLModel.metadata.create_all before it had
-- migrations (commit 491316c), as that code emitted them for postgresql.
-- tests/test_migrations.py builds an old database from this file.
CREATE TABLE conversation (
	title VARCHAR,
	id SERIAL NOT NULL,
	kind VARCHAR(16) NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	direct_key VARCHAR,
	channel_key VARCHAR,
	PRIMARY KEY (id),
	UNIQUE (direct_key),
	UNIQUE (channel_key)
);
CREATE TABLE loginfailure (
	id SERIAL NOT NULL,
	username_key VARCHAR NOT NULL,
	failed_at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (id)
);
CREATE INDEX ix_loginfailure_username_key ON loginfailure (username_key);
CREATE INDEX ix_loginfailure_failed_at ON loginfailure (failed_at);
CREATE TABLE revokedtoken (
	jti VARCHAR NOT NULL,
	expires_at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (jti)
);
CREATE INDEX ix_revokedtoken_expires_at ON revokedtoken (expires_at);
CREATE TABLE "user" (
	username VARCHAR NOT NULL,
	display_name VARCHAR,
	id SERIAL NOT NULL,
	hashed_password VARCHAR NOT NULL,
	role VARCHAR(16) NOT NULL,
	token_version INTEGER NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (id)
);
CREATE UNIQUE INDEX ix_user_username_lower ON "user" (lower(username));
CREATE TABLE membership (
	conversation_id INTEGER NOT NULL,
	user_id INTEGER NOT NULL,
	joined_at TIMESTAMP WITH TIME ZONE NOT NULL,
	last_read_message_id INTEGER NOT NULL,
	PRIMARY KEY (conversation_id, user_id),
	FOREIGN KEY(conversation_id) REFERENCES conversation (id),
	FOREIGN KEY(user_id) REFERENCES "user" (id)
);
CREATE INDEX ix_membership_user_id ON membership (user_id);
CREATE TABLE message (
	client_id VARCHAR,
	id SERIAL NOT NULL,
	conversation_id INTEGER NOT NULL,
	author_id INTEGER NOT NULL,
	content VARCHAR(4000),
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	edited_at TIMESTAMP WITH TIME ZONE,
	deleted BOOLEAN NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (conversation_id, author_id, client_id),
	FOREIGN KEY(conversation_id) REFERENCES conversation (id),
	FOREIGN KEY(author_id) REFERENCES "user" (id)
);
CREATE INDEX ix_message_conversation_id_id ON message (conversation_id, id);
