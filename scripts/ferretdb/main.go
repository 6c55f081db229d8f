// Command ferretdb runs an embedded FerretDB 1.24.2 (MongoDB wire protocol) on the
// PostgreSQL backend for TraffoFlex's tests. Built and started by scripts/deps.sh.
// (FerretDB's own cmd/ferretdb panics when built from Go modules: no version.txt.)
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	addr := flag.String("listen-addr", "127.0.0.1:27018", "TCP address to listen on")
	pgURL := flag.String("postgresql-url", "postgres://127.0.0.1:5432/ferretdb", "PostgreSQL URL")
	shutdown := flag.Duration("shutdown-timeout", 3*time.Second, "exit this long after SIGTERM/SIGINT even if connections linger")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	f, err := ferretdb.New(&ferretdb.Config{
		Listener: ferretdb.ListenerConfig{TCP: *addr}, Handler: "postgresql", PostgreSQLURL: *pgURL, Logger: log,
	})
	if err != nil {
		slog.Error("ferretdb: start failed", "err", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		time.Sleep(*shutdown)
		slog.Warn("ferretdb: shutdown timeout, exiting")
		os.Exit(0)
	}()
	slog.Info("ferretdb: listening", "addr", *addr, "backend", "postgresql")
	_ = f.Run(ctx)
	slog.Info("ferretdb: stopped")
}
