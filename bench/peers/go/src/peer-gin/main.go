// peer-gin: the benchmark subset of brisk's contract in Go with gin
// (GET /health, POST /users, GET /users/:id, POST /orders/process).
package main

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"
	"strconv"

	"briskpeer"

	"github.com/gin-gonic/gin"
)

func fail(c *gin.Context, err error) {
	status, body := briskpeer.StatusOf(err)
	c.JSON(status, body)
}

func main() {
	cfg := briskpeer.LoadConfig("127.0.0.1:8082")
	svc, err := briskpeer.NewService(context.Background(), cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "database:", err)
		os.Exit(1)
	}
	defer svc.Close()

	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(gin.Recovery())
	r.Use(func(c *gin.Context) { c.Header("Server", "peer-gin") })

	r.GET("/health", func(c *gin.Context) { c.String(http.StatusOK, "ok") })
	r.POST("/users", func(c *gin.Context) {
		var req briskpeer.CreateUserRequest
		if err := c.ShouldBindJSON(&req); err != nil {
			c.JSON(400, briskpeer.ErrorBody{Error: "invalid json: " + err.Error()})
			return
		}
		if err := req.Validate(); err != nil {
			fail(c, err)
			return
		}
		u, err := svc.CreateUser(c.Request.Context(), &req)
		if err != nil {
			fail(c, err)
			return
		}
		c.Header("Location", "/users/"+strconv.FormatInt(u.ID, 10))
		c.JSON(http.StatusCreated, u)
	})
	r.GET("/users/:id", func(c *gin.Context) {
		id, err := briskpeer.ParseID(c.Param("id"))
		if err != nil {
			fail(c, err)
			return
		}
		u, err := svc.GetUser(c.Request.Context(), id)
		if err != nil {
			fail(c, err)
			return
		}
		c.JSON(http.StatusOK, u)
	})
	r.POST("/orders/process", func(c *gin.Context) {
		var req briskpeer.ProcessRequest
		if err := c.ShouldBindJSON(&req); err != nil {
			c.JSON(400, briskpeer.ErrorBody{Error: "invalid json: " + err.Error()})
			return
		}
		if err := req.Validate(); err != nil {
			fail(c, err)
			return
		}
		c.JSON(http.StatusOK, svc.Process(&req))
	})

	log.Fatal(r.Run(cfg.Addr))
}
