// A Lumberjack v2 (Beats protocol) receiver for the shipper's tests, built on Elastic's own
// go-lumber server: it appends every event it receives to -out as one JSON line, then
// acknowledges the batch. -cert and -key enable TLS.
package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/elastic/go-lumber/server"
)

func main() {
	bind := flag.String("bind", "127.0.0.1:5044", "host:port to listen on")
	out := flag.String("out", "events.jsonl", "file the received events are appended to")
	cert := flag.String("cert", "", "TLS certificate (PEM)")
	key := flag.String("key", "", "TLS key (PEM)")
	flag.Parse()

	opts := []server.Option{server.V2(true)}
	if *cert != "" {
		pair, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			log.Fatal(err)
		}
		opts = append(opts, server.TLS(&tls.Config{Certificates: []tls.Certificate{pair}}))
	}
	s, err := server.ListenAndServe(*bind, opts...)
	if err != nil {
		log.Fatal(err)
	}
	file, err := os.OpenFile(*out, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("listening on %s", *bind)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-stop
		_ = s.Close()
	}()

	for batch := range s.ReceiveChan() {
		for _, event := range batch.Events {
			line, err := json.Marshal(event)
			if err != nil {
				log.Fatal(err)
			}
			if _, err := file.Write(append(line, '\n')); err != nil {
				log.Fatal(err)
			}
		}
		batch.ACK()
	}
}
