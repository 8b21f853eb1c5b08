# Sourced by the bench's stand-alone scripts, which each work in a scratch database.
# scratch_conninfo CONNINFO DB: CONNINFO (URI or key=value) with its database set to DB.
scratch_conninfo() {
  if [[ "$1" =~ ^(postgres(ql)?://[^/?]*)(/[^?]*)?(\?.*)?$ ]]; then
    echo "${BASH_REMATCH[1]}/$2${BASH_REMATCH[4]}"
  else
    echo "$1 dbname=$2"   # key=value form: the last dbname wins
  fi
}
