//! The notifications service over real sockets, fed by a real event bus (embedded, and
//! RabbitMQ under `amqp::`), on SQLite and on PostgreSQL (`postgres::`), e-mailing through an
//! SMTP server the test starts.

mod api;
mod email;
mod smtp;
mod stream;
mod support;
