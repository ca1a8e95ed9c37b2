int broken(void *state, long arg) {
  return undeclared_variable + ;
}
