package main

import (
	"context"
	"errors"
	"log/slog"
	"net"

	"github.com/drover-net/drover/pkg/datastore"
)

func openKube(ctx context.Context, o *options, cluster *net.IPNet, log *slog.Logger) (datastore.Datastore, error) {
	return nil, errors.New("--datastore=kubernetes: not built yet in this version; use --datastore=local:DIR")
}
